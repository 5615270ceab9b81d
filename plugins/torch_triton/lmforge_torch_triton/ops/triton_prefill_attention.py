"""Paged prefill attention: variable-length causal attention, flash-attention style, over a
cached prefix (earlier chunks or a prefix-cache hit) in the paged cache and this step's own
tokens, read either from the cache too (their K/V already stored) or, when the caller passes
them, from this step's unquantized K/V (``k_new``, ``v_new``), as SGLang's "extend" attention
does. The engine passes them: a prompt with no cached prefix then never reads the cache, and a
quantized cache costs its prompts no dequantization.

One program owns a tile of ``BLOCK_M`` query rows of one sequence and one query head; it walks
the key tiles from the sliding-window start (or 0) up to its last query's position with an
online softmax in fp32: first the key tiles every row sees in full, without masks, then the
tiles on the causal diagonal or the window edge, masked; the step's own tokens first, then the
cached prefix. Query heads of one K/V group run in neighbouring programs, so their shared K/V
tiles are mostly served from L2.

A quantized cache (``quant_policy`` 8 or 4) is read as the decode kernel reads it (see
``triton_decode_attention.py``): integer codes into float16 MMAs, scales and zeros applied to
the ``[queries, keys]`` scores and folded into the probabilities. Soft-capped scores (Gemma 2)
are a constexpr flag, so the other paths compile as they were.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kv_cache import code_dim
from .triton_common import LOG2E, dot_precision, expect, expect_dtype, expect_paged_cache
from .triton_kv_quant import code_words, head_dim_columns, mma_queries, scale_zero_words
from .triton_prefill_tiles import attend_span


# What changes from step to step (a block table's width, where a slice of the step's metadata
# starts) is not specialized on: every value then runs the kernel the warm-up compiled.
@triton.jit(do_not_specialize=["stride_bt"],
            do_not_specialize_on_alignment=["block_tables_ptr", "cu_q_lens_ptr", "kv_lens_ptr"])
def _prefill_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    k_sz_ptr,
    v_sz_ptr,
    k_new_ptr,
    v_new_ptr,
    block_tables_ptr,
    cu_q_lens_ptr,
    kv_lens_ptr,
    out_ptr,
    qk_scale,
    softcap,
    window,
    stride_qt,
    stride_qh,
    stride_kb,
    stride_kr,
    stride_kh,
    stride_vb,
    stride_vr,
    stride_vh,
    stride_szb,
    stride_szr,
    stride_szh,
    stride_knt,
    stride_knh,
    stride_vnt,
    stride_vnh,
    stride_bt,
    stride_ot,
    stride_oh,
    GROUP: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    QUANT: tl.constexpr,
    SOFTCAP: tl.constexpr,
    FRESH: tl.constexpr,
):
    m_tile = tl.program_id(0)
    head = tl.program_id(1)
    seq = tl.program_id(2)
    kv_head = head // GROUP

    q_start = tl.load(cu_q_lens_ptr + seq)
    q_len = tl.load(cu_q_lens_ptr + seq + 1) - q_start
    if m_tile * BLOCK_M >= q_len:
        return
    kv_len = tl.load(kv_lens_ptr + seq)
    prefix_len = kv_len - q_len

    offs_m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    # The head dimension of each column: packed int4 codes unpack in another order.
    offs_d, d_mask = head_dim_columns(BLOCK_D, HEAD_DIM, QUANT)
    m_mask = offs_m < q_len
    q = tl.load(
        q_ptr + (q_start + offs_m)[:, None] * stride_qt + head * stride_qh + offs_d[None, :],
        mask=m_mask[:, None] & d_mask[None, :],
        other=0.0,
    )

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    acc_rows = tl.zeros([BLOCK_M], dtype=tl.float32)
    table_row = block_tables_ptr + seq * stride_bt
    if FRESH:
        # The step's own tokens, causally, from its unquantized K/V (positions counted from
        # the prefix's end, where the window and causal tests give the same answers); the
        # cache then serves only the prefix.
        acc, acc_rows, m_i, l_i = attend_span(
            acc, acc_rows, m_i, l_i, q, offs_m, m_tile * BLOCK_M, q_len, window, qk_scale, softcap,
            k_new_ptr + q_start * stride_knt + kv_head * stride_knh,
            v_new_ptr + q_start * stride_vnt + kv_head * stride_vnh,
            k_sz_ptr, v_sz_ptr, 0.0, table_row, offs_n, offs_d, d_mask,
            0, stride_knt, 0, stride_vnt, 0, 0,
            BLOCK_M, BLOCK_N, HEAD_DIM, BLOCK_D, BLOCK_SIZE, HAS_WINDOW, DOT_PRECISION, 0, SOFTCAP,
            False,
        )  # fmt: skip
        cached_len = prefix_len
    else:
        cached_len = kv_len
    q_sum = 0.0
    if QUANT != 0:
        q, q_sum, q_back = mma_queries(q)
        qk_scale *= q_back
    acc, acc_rows, m_i, l_i = attend_span(
        acc, acc_rows, m_i, l_i, q, prefix_len + offs_m, prefix_len + m_tile * BLOCK_M, cached_len,
        window, qk_scale, softcap, k_cache_ptr + kv_head * stride_kh,
        v_cache_ptr + kv_head * stride_vh, k_sz_ptr + kv_head * stride_szh,
        v_sz_ptr + kv_head * stride_szh, q_sum, table_row, offs_n, offs_d, d_mask,
        stride_kb, stride_kr, stride_vb, stride_vr, stride_szb, stride_szr,
        BLOCK_M, BLOCK_N, HEAD_DIM, BLOCK_D, BLOCK_SIZE, HAS_WINDOW, DOT_PRECISION, QUANT, SOFTCAP,
        True,
    )  # fmt: skip

    if QUANT != 0:
        acc += acc_rows[:, None]
    acc = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    tl.store(
        out_ptr + (q_start + offs_m)[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=m_mask[:, None] & d_mask[None, :],
    )


def _tile_config(head_dim: int) -> dict:
    """Tile sizes for an H100/H200 SM (228 KiB shared memory, 64K registers per SM). For
    d <= 128, 64 x 64 tiles with 4 warps and 3 pipeline stages measured fastest on an H200
    (bf16, d = 128: 230-380 TFLOP/s against 190-320 for 128 x 64 with 8 warps): smaller tiles
    keep two programs resident per SM, so one program's softmax overlaps the other's MMAs, and
    the third stage hides the latency of the gathered (non-TMA) paged K/V loads. Wider heads
    halve the key tile so the Q tile and fp32 accumulator stay in registers."""
    if head_dim <= 128:
        return dict(BLOCK_M=64, BLOCK_N=64, num_warps=4, num_stages=3)
    return dict(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2)


def paged_prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_q_lens: torch.Tensor,
    kv_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    max_q_len: int | None = None,
    out: torch.Tensor | None = None,
    k_scales_zeros: torch.Tensor | None = None,
    v_scales_zeros: torch.Tensor | None = None,
    quant_policy: int = 0,
    softcap: float | None = None,
    k_new: torch.Tensor | None = None,
    v_new: torch.Tensor | None = None,
) -> torch.Tensor:
    """Varlen causal attention: sequence ``b``'s queries are rows ``cu_q_lens[b]:cu_q_lens[b+1]``
    of ``q: [T, nh, d]``, at the last ``q_len`` of its ``kv_lens[b]`` positions, attending to the
    cached positions up to their own (their K/V already stored). Returns ``[T, nh, d]`` in
    ``q``'s dtype. ``max_q_len``, the longest query length, sizes the grid; without it the
    lengths are read back from the device, which waits for all work queued before. ``out``, when
    given, receives the result (a ``[T, nh, d]`` view, rows contiguous in ``d``). The cache may
    be quantized (``quant_policy`` 8 or 4, with its scales and zeros). ``softcap`` soft-caps
    the scaled scores.

    With ``k_new`` and ``v_new`` (``[T, nkv, d]`` in ``q``'s dtype, rows aligned with ``q``, each
    row contiguous in ``d``: this step's keys in the cache's key basis, from
    ``rope_and_store_kv``'s ``k_out``, and its values), each sequence's own tokens are attended
    from them, unquantized, and only its prefix from the cache, so a prompt without a cached
    prefix never reads the cache."""
    expect(q.dim() == 3, f"q must be [T, nh, d], got {tuple(q.shape)}.")
    expect_dtype("q", q)
    expect_paged_cache(k_cache, v_cache, quant_policy, k_scales_zeros, v_scales_zeros)
    _, num_heads, head_dim = q.shape
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
    batch = kv_lens.shape[0]
    expect(
        cu_q_lens.shape == (batch + 1,),
        f"cu_q_lens must be [B+1={batch + 1}], got {tuple(cu_q_lens.shape)}.",
    )
    expect(
        block_tables.dim() == 2 and block_tables.shape[0] == batch,
        f"block_tables must be [B={batch}, max_blocks], got {tuple(block_tables.shape)}.",
    )
    expect(sliding_window is None or sliding_window > 0, "sliding_window must be positive.")
    expect(softcap is None or softcap > 0, "softcap must be positive.")
    fresh = k_new is not None
    expect(fresh == (v_new is not None), "k_new and v_new come together.")
    if fresh:
        expect(
            k_new.shape == v_new.shape == (q.shape[0], num_kv_heads, head_dim)
            and k_new.dtype == v_new.dtype == q.dtype
            and k_new.stride(-1) == v_new.stride(-1) == 1,
            f"k_new and v_new must be [T, nkv, d] {(q.shape[0], num_kv_heads, head_dim)} in "
            f"{q.dtype}, rows contiguous in d; got {tuple(k_new.shape)} {k_new.dtype} and "
            f"{tuple(v_new.shape)} {v_new.dtype}.",
        )
    else:
        k_new = v_new = q
    q = q if q.stride(-1) == 1 else q.contiguous()
    block_tables = block_tables.to(torch.int32).contiguous()
    cu_q_lens = cu_q_lens.to(torch.int32).contiguous()
    kv_lens = kv_lens.to(torch.int32).contiguous()

    out = torch.empty_like(q) if out is None else out
    if q.shape[0] == 0:
        return out
    if max_q_len is None:
        max_q_len = int((cu_q_lens[1:] - cu_q_lens[:-1]).max())
    config = _tile_config(head_dim)
    grid = (triton.cdiv(max_q_len, config["BLOCK_M"]), num_heads, batch)
    k_sz, v_sz, *sz_strides = scale_zero_words(k_cache, k_scales_zeros, v_scales_zeros)
    k_cache, v_cache = code_words(k_cache, quant_policy), code_words(v_cache, quant_policy)
    _prefill_kernel[grid](
        q,
        k_cache,
        v_cache,
        k_sz,
        v_sz,
        k_new,
        v_new,
        block_tables,
        cu_q_lens,
        kv_lens,
        out,
        # log2(e) folds the softmax base change into the scale, so the kernel uses exp2.
        scale * LOG2E,
        (softcap or 1.0) * LOG2E,
        sliding_window or 0,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        *sz_strides,
        k_new.stride(0),
        k_new.stride(1),
        v_new.stride(0),
        v_new.stride(1),
        block_tables.stride(0),
        out.stride(0),
        out.stride(1),
        GROUP=num_heads // num_kv_heads,
        HEAD_DIM=head_dim,
        BLOCK_D=triton.next_power_of_2(head_dim),
        BLOCK_SIZE=block_size,
        HAS_WINDOW=sliding_window is not None,
        DOT_PRECISION=dot_precision(q.dtype),
        QUANT=quant_policy,
        SOFTCAP=softcap is not None,
        FRESH=fresh,
        **config,
    )
    return out
