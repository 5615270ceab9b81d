"""The quantized K/V cache's pieces of the Triton kernels (layout in ``kv_cache.py``): the
quantizing store, the Hadamard transform of int4 keys, and the attention kernels' loads of
codes with the dequantized scores and values they give.

The attention kernels never widen a tile of codes to values: with ``k = code * scale + zero``
per key, ``q . k = scale * (q . code) + zero * sum(q)``, and a value's scale goes into its
probability and its zero into a per-row sum, so the MMAs take the integer codes, exact in
float16, and only ``[queries, keys]``-sized terms are added. Codes become floats without an
integer conversion (see :func:`load_codes`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_common import expect


def scales_zeros_args(k_cache: torch.Tensor, k_scales_zeros: torch.Tensor | None,
                      v_scales_zeros: torch.Tensor | None) -> tuple:
    """The kernels' ``k_sz_ptr, v_sz_ptr, stride_szb, stride_szr, stride_szh`` arguments; at
    quant_policy 0 any pointer stands in, never read."""
    if k_scales_zeros is None:
        return (k_cache, k_cache, 0, 0, 0)
    return (k_scales_zeros, v_scales_zeros, *k_scales_zeros.stride()[:3])


def scale_zero_words(k_cache: torch.Tensor, k_scales_zeros: torch.Tensor | None,
                     v_scales_zeros: torch.Tensor | None) -> tuple:
    """:func:`scales_zeros_args` for kernels that read each token's ``(scale, zero)`` pair as one
    int64 word with :func:`load_scale_zero` (strides in words)."""
    if k_scales_zeros is None:
        return (k_cache, k_cache, 0, 0, 0)
    k_words, v_words = (t.view(torch.int64) for t in (k_scales_zeros, v_scales_zeros))
    return (k_words, v_words, *k_words.stride()[:3])


def code_words(cache: torch.Tensor, quant_policy: int,
               word: torch.dtype = torch.int32) -> torch.Tensor:
    """What the attention kernels read: a quantized cache as int32 words of four code bytes
    (or words of another ``word`` type, e.g. 16-bit pairs; strides in words), which they
    unpack in registers; an unquantized one as it is."""
    if not quant_policy:
        return cache
    size = word.itemsize
    expect(cache.shape[-1] % size == 0,
           f"a quantized cache row must be whole {size}-byte words, not {cache.shape[-1]} bytes; "
           f"int8 needs a head_dim multiple of {size}, int4 of {2 * size}.")
    return cache.view(word)


@triton.jit
def head_dim_columns(BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, QUANT: tl.constexpr):
    """The head dimension each of a tile's ``BLOCK_D`` columns holds, and whether it is a real
    one: the column order of :func:`load_codes`' tiles, which queries and outputs follow. The
    order is the one in which a word's codes come out of its unpacking, so the tile's registers
    are the unpacked words as they are. At quant_policy 8 the columns of word ``w`` are its bytes
    0, 2, 1, 3 (dimensions ``4 w + b``). At quant_policy 4 they are the low nibbles of its bytes
    0, 2, 1, 3, then the high ones, and byte ``j`` packs dimensions ``j`` (low) and
    ``j + HEAD_DIM / 2`` (high). Unquantized, column ``c`` is dimension ``c``."""
    offs = tl.arange(0, BLOCK_D)
    if QUANT == 8:
        dims = (offs // 4) * 4 + (offs % 2) * 2 + (offs % 4) // 2
        mask = offs < HEAD_DIM
    elif QUANT == 4:
        byte = (offs // 8) * 4 + (offs % 2) * 2 + (offs % 4) // 2
        dims = byte + ((offs % 8) // 4) * (HEAD_DIM // 2)
        mask = byte < HEAD_DIM // 2
    else:
        dims = offs
        mask = offs < HEAD_DIM
    return dims, mask


# A code's float16 bit pattern is itself: a subnormal worth ``code * 2**-24``, exact, which
# tensor cores multiply without flushing. The kernels fold this factor back into the scales.
CODE_UNIT = tl.constexpr(16777216.0)


@triton.jit
def _fp16_pair(word):
    """The two 16-bit halves of int32 ``word`` as float16 values."""
    return word.to(tl.int16).to(tl.float16, bitcast=True), \
        (word >> 16).to(tl.int16).to(tl.float16, bitcast=True)


@triton.jit
def load_codes(row_ptrs, valid, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
               QUANT: tl.constexpr):
    """A ``[rows, BLOCK_D]`` float16 tile of ``code / CODE_UNIT`` for the cache rows at
    ``row_ptrs`` (int32 words, see :func:`code_words`), columns in :func:`head_dim_columns`'
    order; rows not ``valid`` read code 0.

    Masking a word with ``0x00FF00FF`` (or ``0x000F000F``) leaves two codes as the bit patterns
    of two float16 subnormals, ``code * 2**-24``: one AND per two codes (LOP3 with one
    immediate), where an integer-to-float conversion runs at a quarter of the float rate or
    less. Loading words, not bytes, keeps the unpacking in the load's registers instead of the
    dot operand's layout."""
    if QUANT == 8:
        offs_w = tl.arange(0, BLOCK_D // 4)
        words = tl.load(row_ptrs[:, None] + offs_w[None, :],
                        mask=valid[:, None] & (offs_w < HEAD_DIM // 4)[None, :], other=0)
        b0, b2 = _fp16_pair(words & 0x00FF00FF)
        b1, b3 = _fp16_pair((words >> 8) & 0x00FF00FF)
        # tl.join adds the minor dimension: columns b0, b2, b1, b3, each pair one register.
        tile = tl.join(tl.join(b0, b1), tl.join(b2, b3))
    else:
        offs_w = tl.arange(0, BLOCK_D // 8)
        words = tl.load(row_ptrs[:, None] + offs_w[None, :],
                        mask=valid[:, None] & (offs_w < HEAD_DIM // 8)[None, :], other=0)
        l0, l2 = _fp16_pair(words & 0x000F000F)
        l1, l3 = _fp16_pair((words >> 8) & 0x000F000F)
        h0, h2 = _fp16_pair((words >> 4) & 0x000F000F)
        h1, h3 = _fp16_pair((words >> 12) & 0x000F000F)
        # Columns l0, l2, l1, l3, h0, h2, h1, h3 (the innermost join varies fastest).
        tile = tl.join(tl.join(tl.join(l0, h0), tl.join(l1, h1)),
                       tl.join(tl.join(l2, h2), tl.join(l3, h3)))
    return tl.reshape(tile, (tile.shape[0], BLOCK_D))


@triton.jit
def load_scale_zero(ptrs, valid):
    """The float32 ``(scale, zero)`` pairs at ``ptrs`` (int64 words, see
    :func:`scale_zero_words`), one 8-byte load each rather than two 4-byte ones; rows not
    ``valid`` read zeros."""
    words = tl.load(ptrs, mask=valid, other=0)
    # Little-endian: the scale is the low half.
    scale = words.to(tl.int32).to(tl.float32, bitcast=True)
    zero = (words >> 32).to(tl.int32).to(tl.float32, bitcast=True)
    return scale, zero


@triton.jit
def mma_queries(q):
    """Queries as the quantized kernels multiply them: float32 ones as they are, 16-bit ones in
    float16 (the codes' type; it keeps more of a bf16 query than bf16 does), scaled down by a
    power of two when some exceed float16's range. Returns the queries, their row sums and the
    factor that undoes the scaling (1 but in that case)."""
    qf = q.to(tl.float32)
    if q.dtype == tl.float32:
        shrink = 1.0
        mma = q
    else:
        top = tl.maximum(tl.max(tl.max(tl.abs(qf), 1), 0), 16384.0)
        shrink = tl.exp2(-tl.ceil(tl.log2(top / 16384.0)))
        mma = (qf * shrink).to(tl.float16)
    return mma, tl.sum(mma.to(tl.float32), 1), 1.0 / shrink


@triton.jit
def dequantized_scores(q, q_sum, k_ptrs, valid, scale, zero, HEAD_DIM: tl.constexpr,
                       BLOCK_D: tl.constexpr, QUANT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """``q . k`` times the caller's factor for the quantized keys at ``k_ptrs`` (``k = code *
    scale + zero`` per key; ``scale`` and ``zero`` already hold the factor):
    ``q . code * scale + sum(q) * zero``, the integer codes in the MMA and one multiply and one
    fused multiply-add per score besides."""
    k = load_codes(k_ptrs, valid, HEAD_DIM, BLOCK_D, QUANT)
    if q.dtype == tl.float32:
        k = k.to(tl.float32)
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)
    return qk * (scale * CODE_UNIT)[None, :] + q_sum[:, None] * zero[None, :]


@triton.jit
def dequantized_values(p, v_ptrs, valid, scale, zero, WIDE: tl.constexpr, HEAD_DIM: tl.constexpr,
                       BLOCK_D: tl.constexpr, QUANT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """``p @ v`` for float32 probabilities ``p`` and the quantized values at ``v_ptrs`` as
    ``top * pv + row[:, None]``; returns ``pv, top, row``, so the caller folds ``row`` into a
    per-row sum instead of adding it to every column. Each key's scale goes into its
    probabilities relative to the tile's largest (so float16 keeps them), its zero into ``row``.
    In float32 when ``WIDE`` (float32 queries), else float16."""
    v = load_codes(v_ptrs, valid, HEAD_DIM, BLOCK_D, QUANT)
    weights, top, row = value_weights(p, scale, zero, WIDE)
    if WIDE:
        v = v.to(tl.float32)
    pv = tl.dot(weights, v, input_precision=DOT_PRECISION)
    return pv, top * CODE_UNIT, row


@triton.jit
def value_weights(p, scale, zero, WIDE: tl.constexpr):
    """What ``p @ v`` multiplies the values' codes by, for float32 probabilities ``p`` and the
    values' scales and zeros: ``(weights, top, row)`` with the weights ``p * scale / top`` (in
    float16 unless ``WIDE``), ``top`` the tile's largest scale and ``row`` the per-row sum of
    ``p * zero``."""
    top = tl.maximum(tl.max(scale, 0), 1e-30)
    if WIDE:
        weights = p * (scale / top)[None, :]
    else:
        weights = (p * (scale / top)[None, :]).to(tl.float16)
    return weights, top, tl.sum(p * zero[None, :], 1)


@triton.jit
def quantize_store(x1, x2, mask, row_mask, dst, sz_dst, offs_h, offs_j, stride_h, stride_szh,
                   HALF: tl.constexpr, QUANT: tl.constexpr):
    """Quantize the rows ``x1 | x2`` (the two ``[heads, HALF]`` float32 halves of each head,
    asymmetric, one scale and zero per head) and store the codes at ``dst`` and ``(scale, zero)``
    at ``sz_dst``, in the layout of ``kv_cache.py``."""
    if QUANT == 8:
        qmax = 255.0
    else:
        qmax = 15.0
    low = tl.minimum(tl.min(tl.where(mask, x1, float("inf")), 1),
                     tl.min(tl.where(mask, x2, float("inf")), 1))
    high = tl.maximum(tl.max(tl.where(mask, x1, float("-inf")), 1),
                      tl.max(tl.where(mask, x2, float("-inf")), 1))
    scale = (high - low) / qmax
    scale = tl.where(scale > 0.0, scale, 1.0)
    # x >= low, so the codes are non-negative and the cast truncates to the floor.
    c1 = tl.minimum((x1 - low[:, None]) / scale[:, None] + 0.5, qmax).to(tl.uint8)
    c2 = tl.minimum((x2 - low[:, None]) / scale[:, None] + 0.5, qmax).to(tl.uint8)
    rows = dst + offs_h[:, None] * stride_h + offs_j[None, :]
    if QUANT == 8:
        tl.store(rows, c1, mask=mask)
        tl.store(rows + HALF, c2, mask=mask)
    else:
        tl.store(rows, c1 | (c2 << 4), mask=mask)
    sz = sz_dst + offs_h * stride_szh
    tl.store(sz, scale, mask=row_mask)
    tl.store(sz + 1, low, mask=row_mask)


@triton.jit
def hadamard_halves(x1, x2, scale, BLOCK_HALF: tl.constexpr):
    """``[x1 | x2] @ H`` as its two halves, for rows of float32 halves ``[rows, BLOCK_HALF]``
    (rows at least 16, for ``tl.dot``) and the Sylvester Hadamard matrix ``H`` of size
    ``2 * BLOCK_HALF`` normalized by ``scale`` (``1 / sqrt(2 * BLOCK_HALF)``). ``H`` is
    ``[[h, h], [h, -h]]`` with ``h[i, j] = (-1) ** popcount(i & j)``, built in registers."""
    offs = tl.arange(0, BLOCK_HALF)
    bits = offs[:, None] & offs[None, :]
    bits = bits ^ (bits >> 8)
    bits = bits ^ (bits >> 4)
    bits = bits ^ (bits >> 2)
    bits = bits ^ (bits >> 1)
    h = (1 - 2 * (bits & 1)).to(tl.float32) * scale
    y1 = tl.dot(x1 + x2, h, input_precision="ieee")
    y2 = tl.dot(x1 - x2, h, input_precision="ieee")
    return y1, y2
