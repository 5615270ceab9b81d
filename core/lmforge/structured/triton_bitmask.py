"""The grammar bitmask applied to the logits on a GPU in one Triton kernel.

Each program takes one constrained row and one block of its tokens, reads the bitmask words of
that block and writes -inf over the excluded tokens in place: nothing is materialized per token
and the logits are never read, where the PyTorch form (``masks.apply_bitmask_reference``) builds
[rows, vocab] intermediates and copies the constrained rows out and back. Imported only when a
mask is applied on a CUDA device (or under ``TRITON_INTERPRET=1`` in tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 2048


@triton.jit
def _apply_bitmask_kernel(logits_ptr, logits_stride, rows_ptr, bitmask_ptr, bitmask_stride,
                          words, vocab, HAS_ROWS: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0)
    tokens = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    row = tl.load(rows_ptr + r) if HAS_ROWS else r
    word = tokens // 32
    in_vocab = tokens < vocab
    # Tokens past the bitmask's width are excluded: their word reads as 0.
    bits = tl.load(bitmask_ptr + r * bitmask_stride + word, mask=in_vocab & (word < words),
                   other=0)
    excluded = ((bits >> (tokens % 32)) & 1) == 0
    neg_inf = tl.full([BLOCK], float("-inf"), logits_ptr.dtype.element_ty)
    tl.store(logits_ptr + row.to(tl.int64) * logits_stride + tokens, neg_inf,
             mask=in_vocab & excluded)


def apply_bitmask_triton(logits: torch.Tensor, rows: torch.Tensor | None,
                         bitmask: torch.Tensor) -> None:
    """``masks.apply_bitmask`` in one kernel launch; the rows of ``logits`` and ``bitmask`` must
    be contiguous."""
    vocab = logits.shape[1]
    grid = (bitmask.shape[0], triton.cdiv(vocab, BLOCK))
    _apply_bitmask_kernel[grid](
        logits, logits.stride(0), rows if rows is not None else bitmask, bitmask,
        bitmask.stride(0), bitmask.shape[1], vocab, HAS_ROWS=rows is not None, BLOCK=BLOCK)
