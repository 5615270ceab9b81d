"""Paged decode attention (one query token per sequence) as split-K "flash-decoding".

One program owns one (sequence, KV head, split): it loads the query rows of every head in that
KV head's group, so each K/V tile is read from HBM once per group rather than once per query
head, and runs an online softmax in fp32 over its share of the sequence's cache tiles. With
more than one split, a second kernel (``triton_decode_merge.py``) merges the per-split partial
results through their log-sum-exp; with one split, the first kernel writes the output directly.

A quantized cache (``quant_policy`` 8 or 4, ``kv_cache.py``) is dequantized in registers without
widening the tiles: with ``k = code * scale + zero`` per key, ``q . k = scale * (q . code) +
zero * sum(q)``, and the values' scales fold into the probabilities and their zeros into one
row sum, so the MMAs take the integer codes (exact in float16, see
``triton_kv_quant.load_codes``) and only ``[heads, keys]``-sized terms are added. A constexpr flag
compiles this in, leaving the unquantized kernel as it was; another (``VARIANT``, see
``decode_launch.CODE_VARIANTS``) picks how the codes reach the MMAs. Soft-capped scores
(Gemma 2: ``cap * tanh(score / cap)``) are a constexpr flag too. The launch choices (splits,
tile, variant) live in ``decode_launch.py``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kv_cache import code_dim
from .decode_launch import CODE_VARIANTS, choose_launch, kernel_config
from .triton_common import (
    LOG2E,
    dot_precision,
    expect,
    expect_dtype,
    expect_paged_cache,
    paged_token_offsets,
    softcap_scores,
)
from .triton_decode_merge import merge_splits, split_tiles
from .triton_kv_bytes import byte_columns, byte_scores, byte_values, join_halves, split_halves
from .triton_kv_quant import (
    code_words,
    dequantized_scores,
    dequantized_values,
    head_dim_columns,
    load_scale_zero,
    mma_queries,
    scale_zero_words,
)


# What changes from step to step (the split count and the strides it sets, a block table's
# width) is not specialized on: every value then runs the kernel the warm-up compiled.
@triton.jit(do_not_specialize=["num_splits", "stride_bt", "stride_lb", "stride_lh"],
            do_not_specialize_on_alignment=["block_tables_ptr", "kv_lens_ptr"])
def _decode_split_kernel(
    q_ptr, k_cache_ptr, v_cache_ptr, k_sz_ptr, v_sz_ptr, block_tables_ptr, kv_lens_ptr, out_ptr,
    lse_ptr, qk_scale, softcap, window, num_splits, stride_qb, stride_qh, stride_kb, stride_kr,
    stride_kh, stride_vb, stride_vr, stride_vh, stride_szb, stride_szr, stride_szh, stride_bt,
    stride_ob, stride_oh, stride_os, stride_lb, stride_lh,
    GROUP: tl.constexpr, BLOCK_H: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, HAS_WINDOW: tl.constexpr,
    SPLIT: tl.constexpr, DOT_PRECISION: tl.constexpr, QUANT: tl.constexpr, VARIANT: tl.constexpr,
    SAME_KV_STRIDES: tl.constexpr, SOFTCAP: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)

    kv_len = tl.load(kv_lens_ptr + seq)
    first_pos, end_tile, tiles_per_split = split_tiles(
        kv_len, window, num_splits, BLOCK_N, HAS_WINDOW
    )
    tile_lo = first_pos // BLOCK_N + split * tiles_per_split
    tile_hi = tl.minimum(tile_lo + tiles_per_split, end_tile)

    offs_h = tl.arange(0, BLOCK_H)
    # The head dimension of each column: quantized codes come out of their tiles in other orders.
    # Byte and pair tiles of int4 codes, and pair tiles of int8 ones, hold two halves of the head
    # dimension (see triton_kv_bytes), each multiplied and accumulated on its own.
    HALVES: tl.constexpr = (QUANT == 4 and VARIANT != 0) or (QUANT == 8 and VARIANT >= 2)
    if QUANT != 0 and VARIANT != 0:
        offs_d, d_mask = byte_columns(BLOCK_D, HEAD_DIM, QUANT, VARIANT)
    else:
        offs_d, d_mask = head_dim_columns(BLOCK_D, HEAD_DIM, QUANT)
    offs_n = tl.arange(0, BLOCK_N)
    head_mask = offs_h < GROUP
    heads = kv_head * GROUP + offs_h
    q = tl.load(
        q_ptr + seq * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
        mask=head_mask[:, None] & d_mask[None, :],
        other=0.0,
    )
    if QUANT != 0:
        q, q_sum, q_back = mma_queries(q)
        qk_scale *= q_back
        # The values' zero points, summed per row apart from the [heads, dims] accumulator.
        acc_rows = tl.zeros([BLOCK_H], dtype=tl.float32)

    m_i = tl.full([BLOCK_H], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_H], dtype=tl.float32)
    if HALVES:
        q, q_hi = split_halves(q, BLOCK_D)
        acc = tl.zeros([BLOCK_H, BLOCK_D // 2], dtype=tl.float32)
    else:
        q_hi = q
        acc = tl.zeros([BLOCK_H, BLOCK_D], dtype=tl.float32)
    acc_hi = acc
    table_row = block_tables_ptr + seq * stride_bt
    for tile in range(tile_lo, tile_hi):
        start = tile * BLOCK_N
        pos = start + offs_n
        valid = pos < kv_len
        if HAS_WINDOW:
            valid = valid & (pos >= first_pos)
        kv_mask = valid[:, None] & d_mask[None, :]
        rows_k = paged_token_offsets(
            table_row, start, kv_len, BLOCK_N, BLOCK_SIZE, stride_kb, stride_kr
        )
        if QUANT == 0:
            k = tl.load(
                k_cache_ptr + rows_k[:, None] + kv_head * stride_kh + offs_d[None, :],
                mask=kv_mask,
                other=0.0,
            )
            qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        else:
            rows_sz = paged_token_offsets(
                table_row, start, kv_len, BLOCK_N, BLOCK_SIZE, stride_szb, stride_szr
            ) + kv_head * stride_szh
            k_scale, k_zero = load_scale_zero(k_sz_ptr + rows_sz, valid)
            k_rows = k_cache_ptr + rows_k + kv_head * stride_kh
            if VARIANT != 0:
                qk = byte_scores(q, q_hi, q_sum, k_rows, valid, k_scale * qk_scale,
                                 k_zero * qk_scale, HEAD_DIM, BLOCK_D, QUANT, HALVES,
                                 DOT_PRECISION)
            else:
                qk = dequantized_scores(q, q_sum, k_rows, valid, k_scale * qk_scale,
                                        k_zero * qk_scale, HEAD_DIM, BLOCK_D, QUANT,
                                        DOT_PRECISION)
        if SOFTCAP:
            qk = softcap_scores(qk, softcap)
        qk = tl.where(valid[None, :], qk, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(qk, 1))
        # A row with nothing attended yet keeps m = -inf; subtract 0 there so exp2 gives 0, not NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(qk - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)

        if SAME_KV_STRIDES:
            rows_v = rows_k
        else:
            rows_v = paged_token_offsets(
                table_row, start, kv_len, BLOCK_N, BLOCK_SIZE, stride_vb, stride_vr
            )
        if QUANT == 0:
            v = tl.load(
                v_cache_ptr + rows_v[:, None] + kv_head * stride_vh + offs_d[None, :],
                mask=kv_mask,
                other=0.0,
            )
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        else:
            v_scale, v_zero = load_scale_zero(v_sz_ptr + rows_sz, valid)
            v_rows = v_cache_ptr + rows_v + kv_head * stride_vh
            wide: tl.constexpr = q.dtype == tl.float32
            if VARIANT != 0:
                pv, pv_hi, top, rows = byte_values(p, v_rows, valid, v_scale, v_zero, wide,
                                                   HEAD_DIM, BLOCK_D, QUANT, HALVES,
                                                   DOT_PRECISION)
                if HALVES:
                    acc_hi = acc_hi * alpha[:, None] + top * pv_hi
            else:
                pv, top, rows = dequantized_values(p, v_rows, valid, v_scale, v_zero, wide,
                                                   HEAD_DIM, BLOCK_D, QUANT, DOT_PRECISION)
            acc = acc * alpha[:, None] + top * pv
            acc_rows = acc_rows * alpha + rows
        m_i = m_new

    if HALVES:
        acc = join_halves(acc, acc_hi)
    if QUANT != 0:
        acc += acc_rows[:, None]

    has_any = l_i > 0.0
    acc = acc / tl.where(has_any, l_i, 1.0)[:, None]
    out_mask = head_mask[:, None] & d_mask[None, :]
    if SPLIT:
        # Partials stay in fp32. Splits past the sequence's end store nothing: the merge reads
        # only the splits that cover it (a graph sizes the grid for the longest context).
        store_h = head_mask & (offs_h * 0 + tile_lo < tile_hi)
        out_offs = (
            seq * stride_ob + heads[:, None] * stride_oh + split * stride_os + offs_d[None, :]
        )
        tl.store(out_ptr + out_offs, acc, mask=store_h[:, None] & d_mask[None, :])
        lse = tl.where(has_any, m_i + tl.log2(tl.where(has_any, l_i, 1.0)), float("-inf"))
        tl.store(lse_ptr + seq * stride_lb + heads * stride_lh + split, lse, mask=store_h)
    else:
        out_offs = seq * stride_ob + heads[:, None] * stride_oh + offs_d[None, :]
        tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def paged_decode_attention_splitk(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    kv_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None,
    num_splits: int,
    num_warps: int | None = None,
    num_stages: int | None = None,
    k_scales_zeros: torch.Tensor | None = None,
    v_scales_zeros: torch.Tensor | None = None,
    quant_policy: int = 0,
    softcap: float | None = None,
    block_n: int | None = None,
    variant: int | None = None,
    max_registers: int | None = None,
) -> torch.Tensor:
    """:func:`paged_decode_attention` with an explicit number of splits per sequence
    (1 = no split-K: a single kernel writes the output) and launch config of the main kernel:
    ``num_warps``, ``num_stages``, ``block_n``, the tokens per K/V tile (a power of two, at
    least 16), and ``variant``, how a quantized cache's codes are read (an index in
    ``decode_launch.CODE_VARIANTS``); each left out is ``decode_launch.kernel_config``'s.
    ``max_registers`` caps the registers per thread of the main kernel (the compiler's
    ``maxnreg``), trading spills for more resident programs."""
    expect(q.dim() == 3, f"q must be [B, nh, d], got {tuple(q.shape)}.")
    expect_dtype("q", q)
    expect_paged_cache(k_cache, v_cache, quant_policy, k_scales_zeros, v_scales_zeros)
    batch, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, cache_dim = k_cache.shape
    expect(
        cache_dim == code_dim(head_dim, quant_policy),
        f"q head_dim {head_dim} does not match the cache's rows of {cache_dim} at quant_policy "
        f"{quant_policy}.",
    )
    expect(
        num_heads % num_kv_heads == 0,
        f"query heads ({num_heads}) must be a multiple of K/V heads ({num_kv_heads}).",
    )
    expect(
        block_tables.dim() == 2 and block_tables.shape[0] == batch,
        f"block_tables must be [B={batch}, max_blocks], got {tuple(block_tables.shape)}.",
    )
    expect(kv_lens.shape == (batch,), f"kv_lens must be [B={batch}], got {tuple(kv_lens.shape)}.")
    expect(num_splits >= 1, f"num_splits must be at least 1, got {num_splits}.")
    expect(sliding_window is None or sliding_window > 0, "sliding_window must be positive.")
    expect(softcap is None or softcap > 0, "softcap must be positive.")
    block_n = block_n or kernel_config(quant_policy, num_splits).block_n
    expect(block_n >= 16 and block_n & (block_n - 1) == 0,
           f"block_n must be a power of two of at least 16, got {block_n}.")
    q = q if q.stride(-1) == 1 else q.contiguous()
    block_tables = block_tables.to(torch.int32).contiguous()
    kv_lens = kv_lens.to(torch.int32).contiguous()

    # Bound the attended span by shapes only (no .item()): the whole table, or the window.
    span = block_tables.shape[1] * block_size
    if sliding_window is not None:
        span = min(span, sliding_window + block_n)
    num_splits = min(num_splits, triton.cdiv(span, block_n))
    # Warps, stages and code variant follow the split count the kernel runs with.
    default = kernel_config(quant_policy, num_splits)
    variant = default.variant if variant is None else variant
    expect(0 <= variant < len(CODE_VARIANTS),
           f"variant must be an index in {CODE_VARIANTS}, got {variant}.")

    group = num_heads // num_kv_heads
    block_d = triton.next_power_of_2(head_dim)
    meta = dict(
        GROUP=group,
        # tl.dot needs at least 16 rows; padding rows load zeros and are never stored.
        BLOCK_H=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim,
        BLOCK_D=block_d,
        BLOCK_SIZE=block_size,
        BLOCK_N=block_n,
        HAS_WINDOW=sliding_window is not None,
        SPLIT=num_splits > 1,
        DOT_PRECISION=dot_precision(q.dtype),
        QUANT=quant_policy,
        VARIANT=variant if quant_policy else 0,
        # Quantized K and V caches of one layout (the usual case) share their row offsets; the
        # unquantized kernel keeps its two lookups, as measured.
        SAME_KV_STRIDES=bool(quant_policy) and k_cache.stride()[:3] == v_cache.stride()[:3],
        SOFTCAP=softcap is not None,
        num_warps=num_warps or default.num_warps,
        num_stages=num_stages or default.num_stages,
        **({"maxnreg": max_registers} if max_registers else {}),
    )
    out = torch.empty_like(q)
    grid = (batch, num_kv_heads, num_splits)
    # log2(e) folds the softmax base change into the scale, so the kernels use exp2.
    qk_scale = scale * LOG2E
    cap = (softcap or 1.0) * LOG2E
    window = sliding_window or 0
    k_sz, v_sz, *sz_strides = scale_zero_words(k_cache, k_scales_zeros, v_scales_zeros)
    # Words of four codes, int8 pairs as uint16 or float16 bit patterns, or bytes as they are.
    word = {0: torch.int32, 2: torch.uint16, 3: torch.float16}.get(variant)
    if word is not None and (variant == 0 or quant_policy == 8):
        k_cache, v_cache = (code_words(c, quant_policy, word) for c in (k_cache, v_cache))
    if num_splits == 1:
        # A single kernel writes the output; the partial and log-sum-exp strides go unused.
        partial, lse, out_strides = out, out, (out.stride(0), out.stride(1), 0, 0, 0)
    else:
        partial = torch.empty(
            batch, num_heads, num_splits, head_dim, device=q.device, dtype=torch.float32
        )
        lse = torch.empty(batch, num_heads, num_splits, device=q.device, dtype=torch.float32)
        out_strides = (*partial.stride()[:3], *lse.stride()[:2])
    _decode_split_kernel[grid](
        q, k_cache, v_cache, k_sz, v_sz, block_tables, kv_lens, partial, lse, qk_scale, cap,
        window, num_splits, q.stride(0), q.stride(1), *k_cache.stride()[:3],
        *v_cache.stride()[:3], *sz_strides, block_tables.stride(0), *out_strides, **meta,
    )
    if num_splits > 1:
        merge_splits(partial, lse, out, kv_lens, window, num_splits, block_n,
                     sliding_window is not None)
    return out


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    kv_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    k_scales_zeros: torch.Tensor | None = None,
    v_scales_zeros: torch.Tensor | None = None,
    quant_policy: int = 0,
    softcap: float | None = None,
) -> torch.Tensor:
    """One query token per sequence (``q: [B, nh, d]``) over its ``kv_lens[b]`` cached positions
    in the paged cache, its own K/V included (quantized at ``quant_policy`` 8 or 4). Returns
    ``[B, nh, d]`` in ``q``'s dtype. ``softcap`` soft-caps the scaled scores. Picks the split-K
    factor from shapes alone (see ``decode_launch.choose_num_splits``)."""
    num_splits, block_n = choose_launch(q.shape[0], k_cache.shape[2],
                                        block_tables.shape[1] * k_cache.shape[1], q.device,
                                        quant_policy, sliding_window)
    return paged_decode_attention_splitk(
        q, k_cache, v_cache, block_tables, kv_lens, scale, sliding_window, num_splits,
        k_scales_zeros=k_scales_zeros, v_scales_zeros=v_scales_zeros, quant_policy=quant_policy,
        softcap=softcap, block_n=block_n,
    )
