"""The Triton kernel that applies grammar bitmasks, against the PyTorch reference."""

import os

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernel compiles instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from lmforge.structured.masks import apply_bitmask, apply_bitmask_reference  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRET else "cuda"


def _interpreter_usable() -> bool:
    """Whether this process imported Triton after TRITON_INTERPRET=1 was set."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.sigmoid, InterpretedFunction)


needs_kernels = pytest.mark.skipif(
    not (torch.cuda.is_available() or (INTERPRET and _interpreter_usable())),
    reason="needs a CUDA GPU, or TRITON_INTERPRET=1 set before Triton's first import: "
    "`TRITON_INTERPRET=1 pytest -m triton_interpret tests/structured/test_triton_bitmask.py`")


def random_case(batch: int, vocab: int, rows: list[int] | None, words: int, seed: int,
                dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, vocab, generator=gen).to(dtype)
    num_rows = batch if rows is None else len(rows)
    bitmask = torch.randint(-2**31, 2**31 - 1, (num_rows, words), dtype=torch.int32,
                            generator=gen)
    index = None if rows is None else torch.tensor(rows, dtype=torch.long)
    return logits, index, bitmask


def check(batch, vocab, rows, words, seed=0, dtype=torch.float32):
    from lmforge.structured.triton_bitmask import apply_bitmask_triton

    logits, index, bitmask = random_case(batch, vocab, rows, words, seed, dtype)
    want = logits.clone()
    apply_bitmask_reference(want, index, bitmask)
    got = logits.to(DEVICE)
    apply_bitmask_triton(got, None if index is None else index.to(DEVICE), bitmask.to(DEVICE))
    assert torch.equal(got.cpu(), want)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("batch, vocab, rows, words", [
    (3, 70, None, 3),  # a bitmask wider than the vocabulary
    (3, 100, [2, 0], 3),  # narrower: the tokens past it are excluded
    (4, 2100, [1, 3], 66),  # more than one block of tokens
    (2, 64, [1], 2),
])
def test_kernel_matches_reference(batch, vocab, rows, words):
    check(batch, vocab, rows, words)


@pytest.mark.triton_interpret
@needs_kernels
def test_kernel_keeps_the_logits_dtype():
    check(2, 96, None, 3, dtype=torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("rows", [None, list(range(0, 256, 3))])
def test_kernel_at_llama3_vocab_on_the_gpu(rows):
    """Llama 3's vocabulary (128,256) at batch 256, through the engine's entry point."""
    logits, index, bitmask = random_case(256, 128256, rows, 4008, seed=1)
    want = logits.clone()
    apply_bitmask_reference(want, index, bitmask)
    got = logits.cuda()
    apply_bitmask(got, None if index is None else index.cuda(), bitmask.cuda())
    assert torch.equal(got.cpu(), want)
