"""Pieces shared by the quantized matmul kernels (W4A16 and W8A8): launch configs, the tile
order, and split-K.

Split-K: at decode sizes a quantized weight is small (Llama-3-8B's o_proj is 8.4 MB in 4 bits),
so one program per output tile would leave most of the GPU idle. Several programs then share an
output tile, each over its own slice of K. They add their partial sums into a zeroed workspace
with atomics and count themselves in on a per-tile lock; the last one reads the sum back (an
atomic exchange with zero, which also clears the workspace), applies the epilogue and resets the
lock. The workspace is therefore zero again after every call, so one kernel launch does the whole
matmul (no memset, no reduction kernel: at batch 1 a decode step runs 128 of these matmuls, and
an extra launch each would cost more than a small one's own time).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .triton_gemv import _shape_class

# Row buckets of the launch tables; more rows than the last one use the "large" entries.
ROW_BUCKETS = (1, 16, 32, 64, 128, 256)
LARGE = 0


@dataclass(frozen=True)
class MatmulConfig:
    """Launch parameters of a quantized matmul for one row bucket and shape class."""

    block_m: int  # 1: the elementwise one-row loop; 16 or more: tl.dot on [block_m, block_k]
    block_n: int
    block_k: int
    split_k: int  # programs that share each output tile, each over its own slice of K
    num_warps: int
    num_stages: int


def row_bucket(m: int) -> int:
    """The launch-table row bucket of ``m`` rows (:data:`LARGE` past the last bucket)."""
    return next((b for b in ROW_BUCKETS if m <= b), LARGE)


def shape_class(n: int, k: int) -> str:
    """The class of a ``[k, n]`` weight in the launch tables: the bf16 GEMV's, so the tables of
    both key the same layers ("narrow": QKV and o_proj, "wide": gate/up, "deep": down, "vocab":
    an LM head)."""
    return _shape_class(n, k)


def split_k_slices(k: int, split_k: int, block_k: int) -> tuple[int, int]:
    """``(k_per_split, splits)``: each split's K range (a multiple of ``block_k``) and how many
    programs share a tile once the range is rounded (at most ``split_k``)."""
    per_split = triton.cdiv(triton.cdiv(k, max(1, split_k)), block_k) * block_k
    return per_split, triton.cdiv(k, per_split)


@triton.jit
def tile_coords(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """``(pid_m, pid_n)`` of program ``pid``: ``GROUP_M`` row tiles per band, so programs that
    run together share the weight tiles they read in L2."""
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * num_n
    first_m = (pid // width) * GROUP_M
    size = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % width) % size
    pid_n = (pid % width) // size
    return pid_m, pid_n


@triton.jit
def reduce_split_k(acc, ws_ptrs, mask, lock_ptr, split_k, SPLIT: tl.constexpr):
    """``(sum over the splits, is_last)``: without ``SPLIT``, this program's ``acc`` and True.
    With it, ``acc`` is added into the workspace at ``ws_ptrs``; the last of the ``split_k``
    programs of the tile gets the total (and False elsewhere), leaving workspace and lock zero."""
    is_last = True
    if SPLIT:
        tl.atomic_add(ws_ptrs, acc, mask=mask, sem="relaxed")
        # Every thread's adds are done before one thread releases them through the lock (the
        # barrier-then-release pattern of a split-K semaphore).
        tl.debug_barrier()
        count = tl.atomic_add(lock_ptr, 1, sem="acq_rel")
        is_last = count == split_k - 1
        if is_last:
            # Exchange the bits (int32): read the sum and leave zero in one atomic.
            bits = tl.atomic_xchg(ws_ptrs.to(tl.pointer_type(tl.int32), bitcast=True),
                                  tl.zeros(acc.shape, tl.int32), mask=mask)
            # Masked-off lanes read nothing: keep them finite.
            acc = tl.where(mask, bits, 0).to(acc.dtype, bitcast=True)
            tl.atomic_xchg(lock_ptr, 0)
    return acc, is_last


# Per device: every workspace ever handed out, newest last. Older ones stay alive because a
# captured CUDA graph keeps the address it was captured with.
_workspaces: dict[torch.device, list[torch.Tensor]] = {}
_MIN_WORDS = 1 << 20


def split_k_workspace(device: torch.device, words: int, locks: int) -> tuple[torch.Tensor,
                                                                             torch.Tensor]:
    """Zeroed int32 ``(workspace[words], locks[locks])`` for a split-K launch on ``device``.
    The kernels leave both zero, so calls reuse them; launches that share them must be ordered
    (one stream, or graphs replayed on it), as a model's layers are."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    held = _workspaces.setdefault(device, [])
    need = words + locks
    if not held or held[-1].numel() < need:
        size = max(need, _MIN_WORDS, 2 * held[-1].numel() if held else 0)
        held.append(torch.zeros(size, dtype=torch.int32, device=device))
    buffer = held[-1]
    return buffer[locks:need], buffer[:locks]
