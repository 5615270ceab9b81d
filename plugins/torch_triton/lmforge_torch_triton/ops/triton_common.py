"""Pieces shared by the Triton kernels: argument checks, launch heuristics, the paged-cache
address computation, and the matmul kernels' tile loads (with SiLU-and-mul for a gated MLP).

Importing this module (or any ``triton_*`` kernel module) needs Triton but no GPU: ``@triton.jit``
only records the function, compilation happens at the first launch.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def expect(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` when a kernel argument breaks the op's contract."""
    if not condition:
        raise ValueError(message)


def expect_dtype(name: str, tensor: torch.Tensor) -> None:
    """Check that ``tensor`` holds one of the float types the kernels are built for."""
    expect(
        tensor.dtype in SUPPORTED_DTYPES,
        f"{name} must be float16, bfloat16 or float32, not {tensor.dtype}.",
    )


def expect_paged_cache(k_cache: torch.Tensor, v_cache: torch.Tensor, quant_policy: int = 0,
                       k_scales_zeros: torch.Tensor | None = None,
                       v_scales_zeros: torch.Tensor | None = None) -> None:
    """Check the ``[NB, BS, nkv, d]`` cache pair: same shape and dtype, rows contiguous in ``d``,
    and a power-of-two block size (it is a compile-time constant of the kernels). A quantized
    cache (``kv_cache.py``) holds uint8 codes and two ``[NB, BS, nkv, 2]`` float32 tensors of
    scales and zeros with one shape and strides."""
    expect(k_cache.dim() == 4, f"k_cache must be [NB, BS, nkv, d], got {tuple(k_cache.shape)}.")
    expect(
        v_cache.shape == k_cache.shape and v_cache.dtype == k_cache.dtype,
        f"v_cache {tuple(v_cache.shape)} {v_cache.dtype} must match k_cache "
        f"{tuple(k_cache.shape)} {k_cache.dtype}.",
    )
    expect(
        k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1,
        "k_cache and v_cache must be contiguous in the head dimension.",
    )
    block_size = k_cache.shape[1]
    expect(
        block_size & (block_size - 1) == 0,
        f"the cache block size must be a power of two, got {block_size}.",
    )
    expect(quant_policy in (0, 4, 8), f"quant_policy must be 0, 4 or 8, got {quant_policy}.")
    if not quant_policy:
        expect_dtype("k_cache", k_cache)
        return
    expect(k_cache.dtype == torch.uint8, f"a quantized cache holds uint8, not {k_cache.dtype}.")
    expect(k_scales_zeros is not None and v_scales_zeros is not None,
           "a quantized cache needs k_scales_zeros and v_scales_zeros.")
    want = (*k_cache.shape[:3], 2)
    for name, t in (("k_scales_zeros", k_scales_zeros), ("v_scales_zeros", v_scales_zeros)):
        expect(t.shape == want and t.dtype == torch.float32,
               f"{name} must be float32 {want}, got {t.dtype} {tuple(t.shape)}.")
    expect(k_scales_zeros.stride() == v_scales_zeros.stride() and k_scales_zeros.stride(-1) == 1,
           "k_scales_zeros and v_scales_zeros must share strides, contiguous in the last dim.")


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: exact fp32 products for fp32 inputs (the default TF32 would
    lose ~3 decimal digits); 16-bit inputs always multiply exactly."""
    return "ieee" if dtype == torch.float32 else "tf32"


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (132 on an H100 SXM, the interpreter's stand-in)."""
    if device.type != "cuda":
        return 132
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


@triton.jit
def paged_token_offsets(
    block_table_row,
    start,
    seq_len,
    BLOCK_N: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    stride_block,
    stride_row,
):
    """Cache offsets (in elements, int64) of positions ``start … start + BLOCK_N - 1`` of one
    sequence, whose block-table row starts at ``block_table_row``; ``start`` is a multiple of
    ``BLOCK_N``. Positions at or past ``seq_len`` get block 0's offsets (callers mask them)."""
    offs = start + tl.arange(0, BLOCK_N)
    if BLOCK_N <= BLOCK_SIZE:
        # The tile lies inside one cache block: one block-id load serves all its rows.
        block_id = tl.load(block_table_row + start // BLOCK_SIZE).to(tl.int64)
        result = block_id * stride_block + (offs % BLOCK_SIZE).to(tl.int64) * stride_row
    else:
        block_ids = tl.load(block_table_row + offs // BLOCK_SIZE, mask=offs < seq_len, other=0)
        result = (
            block_ids.to(tl.int64) * stride_block + (offs % BLOCK_SIZE).to(tl.int64) * stride_row
        )
    return result


@triton.jit
def load_tile(ptrs, mask, EVEN: tl.constexpr, EVICT: tl.constexpr):
    """``ptrs``' values (0 where ``mask`` is false) with the given eviction policy; unmasked when
    ``EVEN`` says the tile lies inside the tensor, since masks cost instructions on a hot loop."""
    if EVEN:
        return tl.load(ptrs, eviction_policy=EVICT)
    return tl.load(ptrs, mask=mask, other=0.0, eviction_policy=EVICT)


@triton.jit
def input_tile(x_ptr, rows, offs_k, M, K, stride_xm, SILU_MUL: tl.constexpr,
               EVEN: tl.constexpr):
    """A matmul's input at ``rows x offs_k`` in fp32; with ``SILU_MUL``, ``silu(gate) * up``
    from ``x = [gate | up]`` (``K`` the width of each half), rounded to the activation dtype
    where the unfused ops round, so the values are theirs. ``EVEN``: the tile lies inside x.
    Every program reads the rows, so they stay in cache."""
    mask = (rows[:, None] < M) & (offs_k[None, :] < K)
    ptrs = x_ptr + rows[:, None] * stride_xm + offs_k[None, :]
    x = load_tile(ptrs, mask, EVEN, "evict_last")
    if SILU_MUL:
        up = load_tile(ptrs + K, mask, EVEN, "evict_last")
        gate = x.to(tl.float32)
        silu = (gate * tl.sigmoid(gate)).to(up.dtype)
        x = (silu.to(tl.float32) * up.to(tl.float32)).to(up.dtype)
    return x.to(tl.float32)


# log2(e): the attention kernels scale scores by it so that their softmax uses exp2.
LOG2E = 1.4426950408889634


@triton.jit
def softcap_scores(qk, cap_log2):
    """``cap * tanh(s / cap)`` of scores held as ``s * log2(e)`` (the kernels' exp2 units),
    with ``cap_log2 = cap * log2(e)``: tanh(x) = 1 - 2 / (exp(2x) + 1), through exp2 (2 log2(e)
    is the literal), its argument clamped where tanh is +-1 in fp32 already."""
    x = tl.minimum(tl.maximum(qk / cap_log2, -20.0), 20.0)
    e = tl.exp2(2.8853900817779268 * x)
    return cap_log2 * (1.0 - 2.0 / (e + 1.0))
