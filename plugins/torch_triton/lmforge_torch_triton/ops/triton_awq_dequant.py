"""AutoAWQ words to weights: the unpacking pieces of the W4A16 kernels, and the dequantize op.

AutoAWQ's GEMM layout (see :mod:`.quant_reference`) packs eight 4-bit values of neighbouring
columns in an int32. Nibbles become floats without int-to-float conversions (a quarter of the
FMA rate) by OR-ing them into the mantissa of a float constant: fp32 ``2**23`` for one weight per
LOP3 (:func:`spread_nibbles`), or two 16-bit ``c`` in one int32 for two weights per LOP3
(:func:`spread_pairs`), which is possible because AutoAWQ's column order puts neighbouring
columns in the two halves of a word.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# The bits of 2.0**23: OR-ing a nibble (at bit p < 12) in gives the float 2**23 + nibble * 2**p.
MAGIC: tl.constexpr = tl.constexpr(0x4B000000)
# Two 16-bit floats c whose mantissa's low 4 bits are free: OR-ing a nibble in gives c + nibble.
PAIR_MAGIC = {torch.bfloat16: 0x43004300, torch.float16: 0x64006400}  # 128.0, 1024.0


@triton.jit
def _magic_nibble(src, mask: tl.constexpr):
    """``2**23 + (bits under mask)`` as a float, for ``src`` already OR-ed with the bits of
    2**23 and ``mask`` below bit 12: ``(src | M) & (mask | M) == (src & mask) | M``, one AND
    with one immediate per weight."""
    return (src & (MAGIC | mask)).to(tl.float32, bitcast=True)


@triton.jit
def spread_nibbles(words, magic):
    """``[..., C]`` AutoAWQ words -> ``[..., 8C]`` fp32 ``2**23 + q * 2**pos``, one per column
    in column order, ``pos`` the nibble's position where it is read (see :func:`_nibble_unit`).
    Column j holds nibble ``j // 2 + 4 * (j % 2)``; nibbles 0-2 are read in place, 3-5 from the
    word shifted right by 12, 6-7 from it shifted by 24, so a weight costs one AND and no shift.
    The masks are constants per source, applied before the interleaves put the columns in order
    (interleave(a, b) alternates a and b). ``magic`` holds the bits of 2**23 as a run-time
    value: as a constant, the compiler would fold the OR into every AND, which then needs the
    constant in a register, rebuilt before each use."""
    low = words | magic
    mid = (words >> 12) | magic
    high = (words >> 24) | magic
    even = tl.interleave(
        tl.interleave(_magic_nibble(low, 0xF), _magic_nibble(low, 0xF00)),  # columns 0, 4
        tl.interleave(_magic_nibble(low, 0xF0), _magic_nibble(mid, 0xF)),  # columns 2, 6
    )
    odd = tl.interleave(
        tl.interleave(_magic_nibble(mid, 0xF0), _magic_nibble(high, 0xF)),  # columns 1, 5
        tl.interleave(_magic_nibble(mid, 0xF00), _magic_nibble(high, 0xF0)),  # columns 3, 7
    )
    return tl.interleave(even, odd)


@triton.jit
def _nibble_unit(BLOCK_N: tl.constexpr):
    """``2**-pos`` of each column (``[BLOCK_N]``), built from its bits (exact, unlike an exp2):
    :func:`spread_nibbles` finds nibble ``n = j // 2 + 4 * (j % 2)`` of column j at bit
    ``pos = 4 * (n % 3)``."""
    col = tl.arange(0, BLOCK_N) % 8
    nibble = col // 2 + 4 * (col % 2)
    return ((127 - 4 * (nibble % 3)) << 23).to(tl.float32, bitcast=True)


@triton.jit
def _lanes(pair, DTYPE: tl.constexpr):
    """The two 16-bit floats packed in an int32 (low half first)."""
    return (pair.to(tl.int16).to(DTYPE, bitcast=True),
            (pair >> 16).to(tl.int16).to(DTYPE, bitcast=True))


@triton.jit
def spread_pairs(words, magic, DTYPE: tl.constexpr):
    """``[..., C]`` AutoAWQ words -> ``[..., 8C]`` 16-bit floats ``c + q`` in column order, for
    ``magic`` the bits of two ``c`` (0x43004300: bf16 128.0; 0x64006400: fp16 1024.0) OR-ed
    under the nibbles. AutoAWQ's order puts columns 2i and 2i+1 in nibbles i and i+4, the two
    halves of the word shifted right by 4i: one shift and one AND/OR (a LOP3; ``magic`` at run
    time keeps the OR in it) give two weights, already packed as the tensor cores take them."""
    lo0, hi0 = _lanes((words & 0x000F000F) | magic, DTYPE)
    lo1, hi1 = _lanes(((words >> 4) & 0x000F000F) | magic, DTYPE)
    lo2, hi2 = _lanes(((words >> 8) & 0x000F000F) | magic, DTYPE)
    lo3, hi3 = _lanes(((words >> 12) & 0x000F000F) | magic, DTYPE)
    even = tl.interleave(tl.interleave(lo0, lo2), tl.interleave(lo1, lo3))  # columns 0, 2, 4, 6
    odd = tl.interleave(tl.interleave(hi0, hi2), tl.interleave(hi1, hi3))
    return tl.interleave(even, odd)


@triton.jit
def _load_group(qz_ptr, s_ptr, group, pid_n, N, stride_zg, stride_sg, EVEN_N: tl.constexpr,
                BLOCK_N: tl.constexpr):
    """The packed zeros (``[BLOCK_N // 8]`` words) and the fp32 scales (``[BLOCK_N]``) of
    quantization group ``group`` for column tile ``pid_n``."""
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = pid_n * (BLOCK_N // 8) + tl.arange(0, BLOCK_N // 8)
    z_ptrs = qz_ptr + group * stride_zg + offs_c
    s_ptrs = s_ptr + group * stride_sg + offs_n
    if EVEN_N:
        return tl.load(z_ptrs), tl.load(s_ptrs).to(tl.float32)
    return (tl.load(z_ptrs, mask=offs_c < N // 8, other=0),
            tl.load(s_ptrs, mask=offs_n < N, other=0.0).to(tl.float32))


@triton.jit
def group_params(qz_ptr, s_ptr, group, pid_n, N, stride_zg, stride_sg, magic,
                 PACKED: tl.constexpr, DTYPE: tl.constexpr, EVEN_N: tl.constexpr,
                 BLOCK_N: tl.constexpr):
    """``(z, scale)`` of a group, fp32 ``[BLOCK_N]`` each, in the form the weight tiles of the
    ``PACKED`` path (``c + zero`` and ``s``) or the fp32 path (``2**23 + zero * 2**pos`` and
    ``s * 2**-pos``) subtract and multiply."""
    zwords, scales = _load_group(qz_ptr, s_ptr, group, pid_n, N, stride_zg, stride_sg, EVEN_N,
                                 BLOCK_N)
    if PACKED:
        return spread_pairs(zwords, magic, DTYPE).to(tl.float32), scales
    return spread_nibbles(zwords, magic), scales * _nibble_unit(BLOCK_N)


@triton.jit
def load_words(qw_ptr, offs_k, pid_n, N, stride_qk, EVEN_N: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """The packed words ``[len(offs_k), BLOCK_N // 8]`` of rows ``offs_k``, column tile
    ``pid_n``."""
    offs_c = pid_n * (BLOCK_N // 8) + tl.arange(0, BLOCK_N // 8)
    w_ptrs = qw_ptr + offs_k.to(tl.int64)[:, None] * stride_qk + offs_c[None, :]
    # Each packed byte is read once: let it leave the cache first.
    if EVEN_N:
        return tl.load(w_ptrs, eviction_policy="evict_first")
    return tl.load(w_ptrs, mask=(offs_c < N // 8)[None, :], other=0,
                   eviction_policy="evict_first")


@triton.jit
def _awq_dequantize_kernel(
    qw_ptr, qz_ptr, s_ptr, out_ptr, N, magic, stride_qk, stride_zg, stride_sg, stride_ok,
    GROUP: tl.constexpr, EVEN_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(1)
    k0 = tl.program_id(0) * BLOCK_K
    offs_k = k0 + tl.arange(0, BLOCK_K)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    z, scale = group_params(qz_ptr, s_ptr, k0 // GROUP, pid_n, N, stride_zg, stride_sg, magic,
                            False, tl.float32, EVEN_N, BLOCK_N)
    d = spread_nibbles(load_words(qw_ptr, offs_k, pid_n, N, stride_qk, EVEN_N, BLOCK_N),
                       magic) - z[None, :]
    tl.store(out_ptr + offs_k.to(tl.int64)[:, None] * stride_ok + offs_n[None, :],
             (d * scale[None, :]).to(out_ptr.dtype.element_ty), mask=offs_n[None, :] < N)


def block_k_for(group_size: int, limit: int) -> int:
    """The largest power of two up to ``limit`` that divides the group size (so a block of K
    rows never straddles two groups)."""
    block = 1
    while block * 2 <= limit and group_size % (block * 2) == 0:
        block *= 2
    return block


def rows_contiguous(t: torch.Tensor) -> torch.Tensor:
    """``t`` with unit stride along its last dimension (the kernels' loads assume it)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def awq_dequantize(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The weight ``[K, N]`` in ``dtype`` (default: the scales' dtype), as
    :func:`.quant_reference.awq_dequantize` computes it."""
    k, n = qweight.shape[0], qweight.shape[1] * 8
    out = torch.empty(k, n, dtype=dtype or scales.dtype, device=qweight.device)
    block_k, block_n = block_k_for(group_size, 32), min(256, triton.next_power_of_2(n))
    qweight, qzeros, scales = (rows_contiguous(t) for t in (qweight, qzeros, scales))
    _awq_dequantize_kernel[(triton.cdiv(k, block_k), triton.cdiv(n, block_n))](
        qweight, qzeros, scales, out, n, MAGIC.value, qweight.stride(0), qzeros.stride(0),
        scales.stride(0), out.stride(0),
        GROUP=group_size, EVEN_N=n % block_n == 0, BLOCK_K=block_k, BLOCK_N=block_n, num_warps=4,
    )
    return out
