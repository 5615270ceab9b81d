"""Byte and pair tiles of a quantized K/V cache: the decode kernel's other ways to feed codes to
its MMAs (``VARIANT`` 1 to 3 in ``triton_decode_attention.py``, ``decode_launch.CODE_VARIANTS``;
the first is ``triton_kv_quant``'s word tiles).

The word tiles unpack four codes per register and interleave them with ``tl.join``, a reshape
the compiler cannot carry into the dot operand's layout: each converted tile goes through shared
memory a second time (a store, a barrier and a reload per K and V tile). A byte tile is converted
element by element (``code`` to the float16 subnormal ``code / CODE_UNIT``), so the compiler can
load the raw bytes straight into the operand's layout and convert them there, as it does for a
mixed-precision matmul. At quant_policy 4 a byte's low nibbles hold dimensions ``0 … d/2 - 1``
and its high ones the rest (``kv_cache.py``), so keys and values take two dots of half the head
dimension each, one per nibble, and need no interleaving either. Pair tiles (``VARIANT`` 2 and
3) read int8 codes as 16-bit words of two, the MMA operand's width: the low bytes hold the even
dimensions and the high bytes the odd ones, again two dots of half the head dimension. Read as
uint16 (2), shared memory serves them element by element; read as float16 bit patterns (3), by
``ldmatrix`` as it serves a bf16 tile, for a few more instructions to unpack the registers.
Int4 codes are byte tiles in all three.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_kv_quant import CODE_UNIT, value_weights


@triton.jit
def byte_columns(BLOCK_D: tl.constexpr, HEAD_DIM: tl.constexpr, QUANT: tl.constexpr,
                 VARIANT: tl.constexpr):
    """The head dimension of each of a query's or output's ``BLOCK_D`` columns, and whether it
    is a real one: dimension order for int8 byte tiles; for int8 pair tiles the even dimensions,
    then the odd ones; at quant_policy 4 the low-nibble half (padded to ``BLOCK_D / 2``), then
    the high one. The halves are the ones :func:`split_halves` cuts."""
    offs = tl.arange(0, BLOCK_D)
    if QUANT == 8 and VARIANT >= 2:
        dims = 2 * (offs % (BLOCK_D // 2)) + offs // (BLOCK_D // 2)
        mask = dims < HEAD_DIM
    elif QUANT == 4:
        col = offs % (BLOCK_D // 2)
        dims = col + (offs // (BLOCK_D // 2)) * (HEAD_DIM // 2)
        mask = col < HEAD_DIM // 2
    else:
        dims = offs
        mask = offs < HEAD_DIM
    return dims, mask


@triton.jit
def split_halves(x, BLOCK_D: tl.constexpr):
    """``x[:, :BLOCK_D / 2], x[:, BLOCK_D / 2:]`` of a ``[rows, BLOCK_D]`` tile."""
    return tl.split(tl.permute(tl.reshape(x, (x.shape[0], 2, BLOCK_D // 2)), (0, 2, 1)))


@triton.jit
def join_halves(lo, hi):
    """The ``[rows, 2 * cols]`` tile whose halves are ``lo`` and ``hi``."""
    return tl.reshape(tl.permute(tl.join(lo, hi), (0, 2, 1)), (lo.shape[0], 2 * lo.shape[1]))


@triton.jit
def _as_code(bits, WIDE: tl.constexpr):
    """Code bits (unsigned, at most 255) as ``code / CODE_UNIT``: a float16 subnormal, exact, or
    its float32 value when ``WIDE``."""
    code = bits.to(tl.int16).to(tl.float16, bitcast=True)
    if WIDE:
        code = code.to(tl.float32)
    return code


@triton.jit
def load_code_bytes(row_ptrs, valid, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                    QUANT: tl.constexpr, HALVES: tl.constexpr, WIDE: tl.constexpr):
    """The code tiles of the cache rows at ``row_ptrs`` (uint8, or pairs at quant_policy 8 with
    ``HALVES``: uint16 or float16 bit patterns): int8 bytes give one ``[rows, BLOCK_D]`` tile,
    returned twice; int8 pairs their low and high bytes and int4 bytes their low and high
    nibbles, two ``[rows, BLOCK_D / 2]`` tiles. Rows not ``valid`` read code 0."""
    if QUANT == 8 and HALVES:
        offs = tl.arange(0, BLOCK_D // 2)
        bits = tl.load(row_ptrs[:, None] + offs[None, :],
                       mask=valid[:, None] & (offs < HEAD_DIM // 2)[None, :], other=0)
        if bits.dtype == tl.float16:
            bits = bits.to(tl.int16, bitcast=True)
        lo = _as_code(bits & 255, WIDE)
        hi = _as_code((bits >> 8) & 255, WIDE)
    elif QUANT == 8:
        offs = tl.arange(0, BLOCK_D)
        bits = tl.load(row_ptrs[:, None] + offs[None, :],
                       mask=valid[:, None] & (offs < HEAD_DIM)[None, :], other=0)
        lo = _as_code(bits, WIDE)
        hi = lo
    else:
        offs = tl.arange(0, BLOCK_D // 2)
        bits = tl.load(row_ptrs[:, None] + offs[None, :],
                       mask=valid[:, None] & (offs < HEAD_DIM // 2)[None, :], other=0)
        lo = _as_code(bits & 15, WIDE)
        hi = _as_code(bits >> 4, WIDE)
    return lo, hi


@triton.jit
def byte_scores(q, q_hi, q_sum, k_ptrs, valid, scale, zero, HEAD_DIM: tl.constexpr,
                BLOCK_D: tl.constexpr, QUANT: tl.constexpr, HALVES: tl.constexpr,
                DOT_PRECISION: tl.constexpr):
    """``triton_kv_quant.dequantized_scores`` from byte or pair tiles: ``q`` is the whole query
    (``q_hi`` unused), or with ``HALVES`` its first half in :func:`byte_columns`' order and
    ``q_hi`` the other."""
    lo, hi = load_code_bytes(k_ptrs, valid, HEAD_DIM, BLOCK_D, QUANT, HALVES,
                             q.dtype == tl.float32)
    qk = tl.dot(q, tl.trans(lo), input_precision=DOT_PRECISION)
    if HALVES:
        qk = tl.dot(q_hi, tl.trans(hi), qk, input_precision=DOT_PRECISION)
    return qk * (scale * CODE_UNIT)[None, :] + q_sum[:, None] * zero[None, :]


@triton.jit
def byte_values(p, v_ptrs, valid, scale, zero, WIDE: tl.constexpr, HEAD_DIM: tl.constexpr,
                BLOCK_D: tl.constexpr, QUANT: tl.constexpr, HALVES: tl.constexpr,
                DOT_PRECISION: tl.constexpr):
    """``triton_kv_quant.dequantized_values`` from byte or pair tiles: ``pv, pv_hi, top, row``,
    where ``pv`` covers every dimension (``pv_hi`` is the same), or with ``HALVES`` the first
    half in :func:`byte_columns`' order and ``pv_hi`` the other."""
    lo, hi = load_code_bytes(v_ptrs, valid, HEAD_DIM, BLOCK_D, QUANT, HALVES, WIDE)
    weights, top, row = value_weights(p, scale, zero, WIDE)
    pv = tl.dot(weights, lo, input_precision=DOT_PRECISION)
    pv_hi = pv
    if HALVES:
        pv_hi = tl.dot(weights, hi, input_precision=DOT_PRECISION)
    return pv, pv_hi, top * CODE_UNIT, row
