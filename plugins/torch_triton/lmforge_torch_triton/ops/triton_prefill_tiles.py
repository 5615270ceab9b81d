"""The online-softmax steps of the paged prefill attention kernel
(``triton_prefill_attention.py``): one key tile, and the span of key tiles a query tile sees,
from the paged cache (unquantized or quantized) or from a plain tensor of a step's own K/V."""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_common import paged_token_offsets, softcap_scores
from .triton_kv_quant import dequantized_scores, dequantized_values, load_scale_zero


@triton.jit
def attend_tile(
    acc,
    acc_rows,
    m_i,
    l_i,
    q,
    q_pos,
    start,
    kv_len,
    window,
    qk_scale,
    softcap,
    k_base,
    v_base,
    k_sz_base,
    v_sz_base,
    q_sum,
    table_row,
    offs_n,
    offs_d,
    d_mask,
    stride_kb,
    stride_kr,
    stride_vb,
    stride_vr,
    stride_szb,
    stride_szr,
    BLOCK_N: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    MASKED: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    QUANT: tl.constexpr,
    SOFTCAP: tl.constexpr,
    PAGED: tl.constexpr,
):
    """One step of the online softmax over the key tile at ``start``, keys at positions below
    ``kv_len`` only. Keys come from the paged cache (``PAGED``: block-table row ``table_row``)
    or from a plain ``[tokens, ...]`` tensor whose row ``p`` (stride ``stride_kr``) is position
    ``p``. With ``MASKED`` off the caller guarantees every key of the tile is visible to every
    query row (no causal, length or window checks needed). Quantized keys and values (``QUANT``)
    take the queries of ``triton_common.mma_queries`` and their row sums ``q_sum``, and sum the
    values' zero points per row in ``acc_rows``."""
    k_pos = start + offs_n
    if PAGED:
        rows_k = paged_token_offsets(
            table_row, start, kv_len, BLOCK_N, BLOCK_SIZE, stride_kb, stride_kr
        )
        rows_v = paged_token_offsets(
            table_row, start, kv_len, BLOCK_N, BLOCK_SIZE, stride_vb, stride_vr
        )
    else:
        rows_k = k_pos.to(tl.int64) * stride_kr
        rows_v = k_pos.to(tl.int64) * stride_vr
    if MASKED:
        kv_mask = (k_pos < kv_len)[:, None] & d_mask[None, :]
    else:
        kv_mask = d_mask[None, :]
    if QUANT == 0:
        k = tl.load(k_base + rows_k[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    else:
        rows_sz = paged_token_offsets(
            table_row, start, kv_len, BLOCK_N, BLOCK_SIZE, stride_szb, stride_szr
        )
        valid = k_pos < kv_len
        k_scale, k_zero = load_scale_zero(k_sz_base + rows_sz, valid)
        qk = dequantized_scores(
            q, q_sum, k_base + rows_k, valid, k_scale * qk_scale, k_zero * qk_scale, HEAD_DIM,
            BLOCK_D, QUANT, DOT_PRECISION,
        )
    if SOFTCAP:
        qk = softcap_scores(qk, softcap)
    if MASKED:
        allowed = (k_pos < kv_len)[None, :] & (k_pos[None, :] <= q_pos[:, None])
        if HAS_WINDOW:
            allowed = allowed & (k_pos[None, :] > q_pos[:, None] - window)
        qk = tl.where(allowed, qk, float("-inf"))

    m_new = tl.maximum(m_i, tl.max(qk, 1))
    # Rows that have seen no allowed key yet (window edge) keep m = -inf; subtract 0 there so
    # exp2 yields 0 rather than NaN.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(qk - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if QUANT == 0:
        v = tl.load(v_base + rows_v[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    else:
        v_scale, v_zero = load_scale_zero(v_sz_base + rows_sz, valid)
        pv, top, rows = dequantized_values(
            p, v_base + rows_v, valid, v_scale, v_zero, q.dtype == tl.float32, HEAD_DIM,
            BLOCK_D, QUANT, DOT_PRECISION,
        )
        acc = acc * alpha[:, None] + top * pv
        acc_rows = acc_rows * alpha + rows
    return acc, acc_rows, m_new, l_i


@triton.jit
def attend_span(
    acc, acc_rows, m_i, l_i, q, q_pos, first_pos, kv_len, window, qk_scale, softcap,
    k_base, v_base, k_sz_base, v_sz_base, q_sum, table_row, offs_n, offs_d, d_mask,
    stride_kb, stride_kr, stride_vb, stride_vr, stride_szb, stride_szr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_SIZE: tl.constexpr, HAS_WINDOW: tl.constexpr,
    DOT_PRECISION: tl.constexpr, QUANT: tl.constexpr, SOFTCAP: tl.constexpr,
    PAGED: tl.constexpr,
):
    """The key tiles below ``kv_len`` that a tile of queries at positions ``first_pos …
    first_pos + BLOCK_M - 1`` sees: from its first row's window start (or 0) up to its last
    row's position. Without a window, the key tiles wholly at or before the first row's position
    are visible to every row and skip the masking arithmetic."""
    hi = tl.minimum(first_pos + BLOCK_M, kv_len)
    if HAS_WINDOW:
        lo = (tl.maximum(first_pos - window + 1, 0) // BLOCK_N) * BLOCK_N
        full_hi = lo
    else:
        lo = 0
        full_hi = (tl.minimum(first_pos + 1, kv_len) // BLOCK_N) * BLOCK_N
    for start in range(lo, full_hi, BLOCK_N):
        acc, acc_rows, m_i, l_i = attend_tile(
            acc, acc_rows, m_i, l_i, q, q_pos, start, kv_len, window, qk_scale, softcap, k_base, v_base,
            k_sz_base, v_sz_base, q_sum, table_row, offs_n, offs_d, d_mask,
            stride_kb, stride_kr, stride_vb, stride_vr, stride_szb, stride_szr,
            BLOCK_N, HEAD_DIM, BLOCK_D, BLOCK_SIZE, False, HAS_WINDOW, DOT_PRECISION, QUANT, SOFTCAP,
            PAGED,
        )  # fmt: skip
    for start in range(full_hi, hi, BLOCK_N):
        acc, acc_rows, m_i, l_i = attend_tile(
            acc, acc_rows, m_i, l_i, q, q_pos, start, kv_len, window, qk_scale, softcap, k_base, v_base,
            k_sz_base, v_sz_base, q_sum, table_row, offs_n, offs_d, d_mask,
            stride_kb, stride_kr, stride_vb, stride_vr, stride_szb, stride_szr,
            BLOCK_N, HEAD_DIM, BLOCK_D, BLOCK_SIZE, True, HAS_WINDOW, DOT_PRECISION, QUANT, SOFTCAP,
            PAGED,
        )  # fmt: skip
    return acc, acc_rows, m_i, l_i
