"""Helpers shared by the Triton kernel tests: where kernels run, tolerances, and random paged
KV caches laid out the way the block manager lays them out (shuffled blocks, padded tables)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import pytest
import torch

# Set by each test module before it imports Triton (see its first lines).
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRET else "cuda"


def _interpreter_usable() -> bool:
    """Whether Triton's own library functions (``tl.sigmoid``, ``tl.cdiv``, ...) were built for
    the interpreter. They are decorated when Triton is first imported, so a process that imported
    Triton before ``TRITON_INTERPRET=1`` was set cannot interpret kernels that call them."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.sigmoid, InterpretedFunction)


# The interpreter runs on CPU tensors; compiled kernels need a GPU.
if INTERPRET:
    needs_kernels = pytest.mark.skipif(
        not _interpreter_usable(),
        reason="Triton was imported before TRITON_INTERPRET=1 was set; run "
        "`TRITON_INTERPRET=1 pytest -m triton_interpret plugins/torch_triton/tests`",
    )
else:
    needs_kernels = pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs TRITON_INTERPRET=1 or a CUDA GPU"
    )
# Realistic shapes compile for the GPU; the interpreter would take hours on them.
needs_gpu = pytest.mark.skipif(
    not torch.cuda.is_available() or INTERPRET, reason="needs a CUDA GPU"
)

# The interpreter's fp32 -> float8_e4m3fn conversion drops the carry when rounding reaches the
# next power of two (124.3 becomes 64): kernels that quantize to fp8 are tested on the GPU.
fp8_quantizing_needs_gpu = pytest.mark.skipif(
    INTERPRET, reason="Triton's interpreter converts fp32 to float8_e4m3fn wrongly where "
    "rounding carries into the exponent; the GPU tests cover fp8 quantization")

# Llama-3-8B's linears as (K, N): fused QKV, o_proj, fused gate/up, down.
LLAMA3_8B_LINEARS = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672),
                     "down": (14336, 4096)}

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# fp32 tolerances allow for a different summation order; 16-bit ones for one rounding of the
# output plus the 16-bit probabilities fed to the P @ V product.
TOLERANCES = {
    torch.float32: dict(atol=1e-4, rtol=1e-4),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2),
}


def _widen_bf16_in_interpreted_dot() -> None:
    """The interpreter stores bf16 as raw ``uint16`` (numpy has no bf16) and its ``tl.dot``
    multiplies those bit patterns as integers. Widen bf16 operands to fp32 first: exact, and
    what the tensor cores compute on a GPU."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    create_dot = builder.create_dot

    def widen(handle):
        if handle.dtype != tl.bfloat16:
            return handle
        bits = handle.data.astype(np.uint32) << 16
        return interpreter.TensorHandle(bits.view(np.float32), tl.float32)

    def create_dot_widened(self, a, b, d, input_precision, max_num_imprecise_acc):
        return create_dot(self, widen(a), widen(b), d, input_precision, max_num_imprecise_acc)

    builder.create_dot = create_dot_widened


if INTERPRET:
    _widen_bf16_in_interpreted_dot()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, spread: float = 1.0) -> None:
    """``torch.testing.assert_close`` at the dtype's tolerance, after checking for NaN/inf
    (which would otherwise match a NaN in the reference). ``spread`` widens the absolute
    tolerance for inputs spread wider than standard-normal values: a 16-bit rounding error
    grows with the magnitudes it rounds."""
    assert torch.isfinite(actual).all(), "kernel output has NaN or inf"
    assert torch.isfinite(expected).all(), "reference output has NaN or inf"
    tol = TOLERANCES[expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * spread)


def poison_allocator(*outputs: tuple[tuple[int, ...], torch.dtype]) -> None:
    """Fill the memory that the next allocations of these ``(shape, dtype)`` will get with NaN
    bits (0xFF bytes), so a kernel that leaves part of its output unwritten fails the finite
    check: the CUDA caching allocator hands a freed block to the next request of its size. On
    the CPU (the interpreter) this does nothing."""
    if DEVICE != "cuda":
        return
    blocks = [torch.full((math.prod(shape) * dtype.itemsize,), 255, dtype=torch.uint8,
                         device=DEVICE) for shape, dtype in outputs]
    del blocks


def make_generator(seed: int = 0) -> torch.Generator:
    """A seeded generator on the device the kernels run on."""
    return torch.Generator(device=DEVICE).manual_seed(seed)


def randn(shape: tuple[int, ...], dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """Standard-normal values drawn on ``generator``'s device, then cast to ``dtype``."""
    return torch.randn(shape, generator=generator, device=generator.device).to(dtype)


# The quantized attention kernels round ``p * scale`` products whose sum is ``value - zero``, a
# row's whole range: about twice the magnitude of the standard-normal values themselves (see
# triton_decode_attention.py), so their 16-bit rounding error is about twice as large.
QUANT_SPREAD = 2.0


@dataclass
class PagedKV:
    """A random paged K/V pool and the tables that map each sequence onto it; a quantized pool
    (``kv_cache.py``) also has scales and zeros."""

    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_tables: torch.Tensor
    kv_lens: torch.Tensor
    k_scales_zeros: torch.Tensor | None = None
    v_scales_zeros: torch.Tensor | None = None
    quant_policy: int = 0

    @property
    def quant(self) -> dict:
        """The cache ops' keyword arguments for this pool's layout."""
        if not self.quant_policy:
            return {}
        return dict(k_scales_zeros=self.k_scales_zeros, v_scales_zeros=self.v_scales_zeros,
                    quant_policy=self.quant_policy)


def make_paged_kv(
    kv_lens: list[int],
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    generator: torch.Generator,
    spare_blocks: int = 3,
    quant_policy: int = 0,
) -> PagedKV:
    """Random caches whose blocks are handed to sequences in shuffled order; each table row is
    padded past the sequence's blocks with a valid but foreign block id, as the engine pads it.
    With ``quant_policy`` 8 or 4 the random values are stored quantized, each token and head
    with its own standard-normal offset so that zeros differ from row to row."""
    from lmforge_torch_triton import kv_cache

    blocks_per_seq = [-(-n // block_size) for n in kv_lens]
    num_blocks = sum(blocks_per_seq) + spare_blocks
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = randn(shape, dtype, generator)
    v_cache = randn(shape, dtype, generator)
    quant = {}
    if quant_policy:
        offsets = randn((*shape[:3], 1), torch.float32, generator)
        (k_cache, k_sz), (v_cache, v_sz) = (
            kv_cache.quantize((c.float() + offsets).to(dtype), quant_policy)
            for c in (k_cache, v_cache)
        )
        quant = dict(k_scales_zeros=k_sz, v_scales_zeros=v_sz, quant_policy=quant_policy)
    order = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(num_blocks))
    width = max(blocks_per_seq) + 1
    tables = torch.full((len(kv_lens), width), int(order[-1]), dtype=torch.int32)
    used = 0
    for b, n in enumerate(blocks_per_seq):
        tables[b, :n] = order[used : used + n].to(torch.int32)
        used += n
    lens = torch.tensor(kv_lens, dtype=torch.int32)
    return PagedKV(k_cache, v_cache, tables.to(DEVICE), lens.to(DEVICE), **quant)
