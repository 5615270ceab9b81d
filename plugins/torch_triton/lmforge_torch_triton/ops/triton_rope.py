"""Rotary embedding fused with the paged K/V cache write, and the cache write alone.

One program per token: it rotates every query and key head of the token (NeoX / HF
"rotate_half" layout, in fp32), returns the rotated queries and writes the rotated keys and the
values straight into their cache slot, so rotated K never makes a round trip through HBM.
Tokens whose slot is negative (padding of a captured CUDA graph batch) are not written.

With ``quant_policy`` 8 or 4 the kernels quantize each token's K and V heads as they write them
(per token and head, asymmetric; layout in ``kv_cache.py``): the rotated key is rounded to the
model dtype first, as the unquantized cache would hold it, so the reference quantizes the same
values. At int4 with a power-of-two head dim, keys are stored and queries returned in the
Hadamard basis (``kv_cache.rotates_keys``), computed in registers on the halves the rotary
embedding leaves.

With per-head query and key norms (Qwen3, Gemma 3; a constexpr flag) the kernel RMS-normalizes
each head in registers before rotating it, rounded to the activation dtype as the unfused norm
would leave it, so those models spend no extra pass over q and k.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..kv_cache import code_dim, rotates_keys
from .triton_common import (
    expect,
    expect_dtype,
    expect_paged_cache,
)
from .triton_kv_quant import (
    hadamard_halves,
    quantize_store,
    scales_zeros_args,
)


@triton.jit
def _head_norm(x1, x2, w_ptr, offs_j, j_mask, eps, offset, HALF: tl.constexpr,
               HAS_OFFSET: tl.constexpr, DTYPE: tl.constexpr):
    """RMSNorm of each head row (its two halves ``x1``, ``x2`` in fp32) with weight ``[d]``,
    rounded to ``DTYPE``; the order of the reference's ``rms_norm`` for the same ``offset``."""
    inv = tl.rsqrt((tl.sum(x1 * x1, 1) + tl.sum(x2 * x2, 1)) / (2 * HALF) + eps)[:, None]
    w1 = tl.load(w_ptr + offs_j, mask=j_mask, other=0.0).to(tl.float32)[None, :]
    w2 = tl.load(w_ptr + HALF + offs_j, mask=j_mask, other=0.0).to(tl.float32)[None, :]
    if HAS_OFFSET:
        y1, y2 = (x1 * inv) * (offset + w1), (x2 * inv) * (offset + w2)
    else:
        y1 = (x1 * inv).to(DTYPE).to(tl.float32) * w1
        y2 = (x2 * inv).to(DTYPE).to(tl.float32) * w2
    return y1.to(DTYPE).to(tl.float32), y2.to(DTYPE).to(tl.float32)


@triton.jit
def _rotate_half(x_ptr, offs_h, offs_j, mask, stride_h, HALF: tl.constexpr, cos, sin,
                 w_ptr, eps, offset, HEAD_NORM: tl.constexpr, HAS_OFFSET: tl.constexpr):
    """Load the two halves of heads ``offs_h`` at ``x_ptr`` and return them rotated, in fp32;
    with ``HEAD_NORM``, each head RMS-normalized by the weight at ``w_ptr`` first."""
    base = x_ptr + offs_h[:, None] * stride_h + offs_j[None, :]
    x1 = tl.load(base, mask=mask, other=0.0)
    dtype = x1.dtype
    x1 = x1.to(tl.float32)
    x2 = tl.load(base + HALF, mask=mask, other=0.0).to(tl.float32)
    if HEAD_NORM:
        x1, x2 = _head_norm(x1, x2, w_ptr, offs_j, offs_j < HALF, eps, offset, HALF,
                            HAS_OFFSET, dtype)
    return x1 * cos[None, :] - x2 * sin[None, :], x2 * cos[None, :] + x1 * sin[None, :]


@triton.jit
def _rope_store_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    cos_ptr,
    sin_ptr,
    q_out_ptr,
    k_cache_ptr,
    v_cache_ptr,
    k_sz_ptr,
    v_sz_ptr,
    slot_mapping_ptr,
    q_norm_ptr,
    k_norm_ptr,
    k_out_ptr,
    norm_eps,
    norm_offset,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_ct,
    stride_st,
    stride_ot,
    stride_oh,
    stride_kcb,
    stride_kcr,
    stride_kch,
    stride_vcb,
    stride_vcr,
    stride_vch,
    stride_szb,
    stride_szr,
    stride_szh,
    stride_kot,
    stride_koh,
    hadamard_scale,
    NUM_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HALF: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_KV: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    QUANT: tl.constexpr,
    ROTATE_KEYS: tl.constexpr,
    HEAD_NORM: tl.constexpr,
    HAS_OFFSET: tl.constexpr,
    K_OUT: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    offs_j = tl.arange(0, BLOCK_HALF)
    j_mask = offs_j < HALF
    cos = tl.load(cos_ptr + token * stride_ct + offs_j, mask=j_mask, other=0.0)
    sin = tl.load(sin_ptr + token * stride_st + offs_j, mask=j_mask, other=0.0)

    offs_h = tl.arange(0, BLOCK_H)
    q_mask = (offs_h < NUM_HEADS)[:, None] & j_mask[None, :]
    q1, q2 = _rotate_half(
        q_ptr + token * stride_qt, offs_h, offs_j, q_mask, stride_qh, HALF, cos, sin,
        q_norm_ptr, norm_eps, norm_offset, HEAD_NORM, HAS_OFFSET,
    )
    if ROTATE_KEYS:
        dt = q_out_ptr.dtype.element_ty
        q1, q2 = hadamard_halves(q1.to(dt).to(tl.float32), q2.to(dt).to(tl.float32),
                                 hadamard_scale, BLOCK_HALF)
    q_out = q_out_ptr + token * stride_ot + offs_h[:, None] * stride_oh + offs_j[None, :]
    tl.store(q_out, q1.to(q_out_ptr.dtype.element_ty), mask=q_mask)
    tl.store(q_out + HALF, q2.to(q_out_ptr.dtype.element_ty), mask=q_mask)

    slot = tl.load(slot_mapping_ptr + token)
    if slot >= 0:
        offs_kv = tl.arange(0, BLOCK_KV)
        kv_mask = (offs_kv < NUM_KV_HEADS)[:, None] & j_mask[None, :]
        block = slot // BLOCK_SIZE
        row = slot % BLOCK_SIZE
        k1, k2 = _rotate_half(
            k_ptr + token * stride_kt, offs_kv, offs_j, kv_mask, stride_kh, HALF, cos, sin,
            k_norm_ptr, norm_eps, norm_offset, HEAD_NORM, HAS_OFFSET,
        )
        v_src = v_ptr + token * stride_vt + offs_kv[:, None] * stride_vh + offs_j[None, :]
        v1 = tl.load(v_src, mask=kv_mask, other=0.0)
        v2 = tl.load(v_src + HALF, mask=kv_mask, other=0.0)
        if QUANT == 0:
            k_dst = (
                k_cache_ptr
                + block * stride_kcb
                + row * stride_kcr
                + offs_kv[:, None] * stride_kch
                + offs_j[None, :]
            )
            tl.store(k_dst, k1.to(k_cache_ptr.dtype.element_ty), mask=kv_mask)
            tl.store(k_dst + HALF, k2.to(k_cache_ptr.dtype.element_ty), mask=kv_mask)
            v_dst = (
                v_cache_ptr
                + block * stride_vcb
                + row * stride_vcr
                + offs_kv[:, None] * stride_vch
                + offs_j[None, :]
            )
            tl.store(v_dst, v1.to(v_cache_ptr.dtype.element_ty), mask=kv_mask)
            tl.store(v_dst + HALF, v2.to(v_cache_ptr.dtype.element_ty), mask=kv_mask)
        else:
            dt = k_ptr.dtype.element_ty
            k1, k2 = k1.to(dt).to(tl.float32), k2.to(dt).to(tl.float32)
            if ROTATE_KEYS:
                k1, k2 = hadamard_halves(k1, k2, hadamard_scale, BLOCK_HALF)
            heads = offs_kv < NUM_KV_HEADS
            sz = block * stride_szb + row * stride_szr
            quantize_store(k1, k2, kv_mask, heads,
                           k_cache_ptr + block * stride_kcb + row * stride_kcr, k_sz_ptr + sz,
                           offs_kv, offs_j, stride_kch, stride_szh, HALF, QUANT)
            quantize_store(v1.to(tl.float32), v2.to(tl.float32), kv_mask, heads,
                           v_cache_ptr + block * stride_vcb + row * stride_vcr, v_sz_ptr + sz,
                           offs_kv, offs_j, stride_vch, stride_szh, HALF, QUANT)
        if K_OUT:
            # The keys as stored before quantizing: rounded, in the cache's key basis.
            k_dst = k_out_ptr + token * stride_kot + offs_kv[:, None] * stride_koh + offs_j[None, :]
            tl.store(k_dst, k1.to(k_out_ptr.dtype.element_ty), mask=kv_mask)
            tl.store(k_dst + HALF, k2.to(k_out_ptr.dtype.element_ty), mask=kv_mask)


@triton.jit
def _store_kv_kernel(
    k_ptr,
    v_ptr,
    k_cache_ptr,
    v_cache_ptr,
    k_sz_ptr,
    v_sz_ptr,
    slot_mapping_ptr,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_kcb,
    stride_kcr,
    stride_kch,
    stride_vcb,
    stride_vcr,
    stride_vch,
    stride_szb,
    stride_szr,
    stride_szh,
    hadamard_scale,
    NUM_KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_KV: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    QUANT: tl.constexpr,
    ROTATE_KEYS: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_mapping_ptr + token)
    if slot >= 0:
        offs_kv = tl.arange(0, BLOCK_KV)
        block = slot // BLOCK_SIZE
        row = slot % BLOCK_SIZE
        if QUANT == 0:
            offs_d = tl.arange(0, BLOCK_D)
            mask = (offs_kv < NUM_KV_HEADS)[:, None] & (offs_d < HEAD_DIM)[None, :]
            heads_d = offs_kv[:, None] * stride_kh + offs_d[None, :]
            k = tl.load(k_ptr + token * stride_kt + heads_d, mask=mask)
            k_dst = (k_cache_ptr + block * stride_kcb + row * stride_kcr
                     + offs_kv[:, None] * stride_kch)
            tl.store(k_dst + offs_d[None, :], k.to(k_cache_ptr.dtype.element_ty), mask=mask)
            heads_d = offs_kv[:, None] * stride_vh + offs_d[None, :]
            v = tl.load(v_ptr + token * stride_vt + heads_d, mask=mask)
            v_dst = (v_cache_ptr + block * stride_vcb + row * stride_vcr
                     + offs_kv[:, None] * stride_vch)
            tl.store(v_dst + offs_d[None, :], v.to(v_cache_ptr.dtype.element_ty), mask=mask)
        else:
            # Each head's two halves, as the rotary kernel holds them.
            half = HEAD_DIM // 2
            offs_j = tl.arange(0, BLOCK_D // 2)
            heads = offs_kv < NUM_KV_HEADS
            mask = heads[:, None] & (offs_j < half)[None, :]
            sz = block * stride_szb + row * stride_szr
            k_src = k_ptr + token * stride_kt + offs_kv[:, None] * stride_kh + offs_j[None, :]
            k1 = tl.load(k_src, mask=mask, other=0.0).to(tl.float32)
            k2 = tl.load(k_src + half, mask=mask, other=0.0).to(tl.float32)
            if ROTATE_KEYS:
                k1, k2 = hadamard_halves(k1, k2, hadamard_scale, BLOCK_D // 2)
            quantize_store(k1, k2, mask, heads, k_cache_ptr + block * stride_kcb + row * stride_kcr,
                           k_sz_ptr + sz, offs_kv, offs_j, stride_kch, stride_szh, half, QUANT)
            v_src = v_ptr + token * stride_vt + offs_kv[:, None] * stride_vh + offs_j[None, :]
            v1 = tl.load(v_src, mask=mask, other=0.0).to(tl.float32)
            v2 = tl.load(v_src + half, mask=mask, other=0.0).to(tl.float32)
            quantize_store(v1, v2, mask, heads, v_cache_ptr + block * stride_vcb + row * stride_vcr,
                           v_sz_ptr + sz, offs_kv, offs_j, stride_vch, stride_szh, half, QUANT)


def _rows(heads: int, rotate: bool) -> int:
    """A tile's rows for ``heads``; the Hadamard product is a ``tl.dot``, which takes 16 or more."""
    return max(16, triton.next_power_of_2(heads)) if rotate else triton.next_power_of_2(heads)


def _check_kv(k: torch.Tensor, v: torch.Tensor, k_cache, v_cache, slot_mapping,
              k_scales_zeros=None, v_scales_zeros=None, quant_policy: int = 0) -> int:
    """Check the arguments of a cache write; returns the head dim."""
    expect_paged_cache(k_cache, v_cache, quant_policy, k_scales_zeros, v_scales_zeros)
    num_kv_heads, head_dim = k_cache.shape[2], k.shape[-1]
    expect(
        k_cache.shape[3] == code_dim(head_dim, quant_policy)
        and (head_dim % 2 == 0 or not quant_policy),
        f"the cache rows ({k_cache.shape[3]}) do not hold an even head_dim {head_dim} at "
        f"quant_policy {quant_policy}.",
    )
    expect(
        k.dim() == 3 and k.shape[1:] == (num_kv_heads, head_dim),
        f"k must be [T, nkv={num_kv_heads}, d={head_dim}], got {tuple(k.shape)}.",
    )
    expect(v.shape == k.shape, f"v {tuple(v.shape)} must have k's shape {tuple(k.shape)}.")
    expect_dtype("k", k)
    expect_dtype("v", v)
    expect(
        slot_mapping.shape == (k.shape[0],),
        f"slot_mapping must be [T={k.shape[0]}], got {tuple(slot_mapping.shape)}.",
    )
    expect(
        k.stride(-1) == 1 and v.stride(-1) == 1, "k and v must be contiguous in the head dimension."
    )
    return head_dim


def store_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scales_zeros: torch.Tensor | None = None,
    v_scales_zeros: torch.Tensor | None = None,
    quant_policy: int = 0,
) -> None:
    """Write ``k, v: [T, nkv, d]`` into the paged cache at ``slot_mapping[t] = block * BS + row``
    (in place; tokens with a negative slot are skipped), quantized at ``quant_policy`` 8 or 4."""
    quant = (k_scales_zeros, v_scales_zeros, quant_policy)
    head_dim = _check_kv(k, v, k_cache, v_cache, slot_mapping, *quant)
    if k.shape[0] == 0:
        return
    _, block_size, num_kv_heads, _ = k_cache.shape
    k_sz, v_sz, *sz_strides = scales_zeros_args(k_cache, k_scales_zeros, v_scales_zeros)
    rotate = rotates_keys(quant_policy, head_dim)
    _store_kv_kernel[(k.shape[0],)](
        k,
        v,
        k_cache,
        v_cache,
        k_sz,
        v_sz,
        slot_mapping.to(torch.int64),
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        *sz_strides,
        head_dim**-0.5,
        NUM_KV_HEADS=num_kv_heads,
        HEAD_DIM=head_dim,
        BLOCK_KV=_rows(num_kv_heads, rotate),
        BLOCK_D=triton.next_power_of_2(head_dim),
        BLOCK_SIZE=block_size,
        QUANT=quant_policy,
        ROTATE_KEYS=rotate,
        # A token's K and V rows are 2 KiB each for 8 x 128 bf16: a copy that 2 warps saturate.
        num_warps=2,
    )


def rope_and_store_kv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scales_zeros: torch.Tensor | None = None,
    v_scales_zeros: torch.Tensor | None = None,
    quant_policy: int = 0,
    q_norm: torch.Tensor | None = None,
    k_norm: torch.Tensor | None = None,
    norm_eps: float = 1e-6,
    norm_offset: float = 0.0,
    k_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotate ``q: [T, nh, d]`` and ``k: [T, nkv, d]`` by the ``[T, d/2]`` float32 tables of
    ``reference.rope_cos_sin``, write the rotated ``k`` and ``v`` into the paged cache at
    ``slot_mapping`` (as :func:`store_kv`), and return the rotated ``q`` (a new tensor). With
    ``q_norm`` and ``k_norm`` (``[d]``), each head is RMS-normalized first (``norm_offset``:
    scale by ``offset + weight``, as ``rms_norm``). ``k_out`` (``[T, nkv, d]`` in ``k``'s dtype,
    rows contiguous in ``d``), when given, receives the rotated keys unquantized in the cache's
    key basis, for :func:`paged_prefill_attention`'s ``k_new``; rows of tokens with a negative
    slot are left as they are."""
    quant = (k_scales_zeros, v_scales_zeros, quant_policy)
    kv_dim = _check_kv(k, v, k_cache, v_cache, slot_mapping, *quant)
    expect(
        q.dim() == 3 and q.shape[0] == k.shape[0],
        f"q must be [T={k.shape[0]}, nh, d], got {tuple(q.shape)}.",
    )
    expect_dtype("q", q)
    tokens, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    expect(head_dim == kv_dim, f"q head_dim {head_dim} must equal k's {kv_dim}.")
    half = head_dim // 2
    expect(
        cos.shape == (tokens, half) and sin.shape == (tokens, half),
        f"cos and sin must be [T={tokens}, d/2={half}], got {tuple(cos.shape)} and {tuple(sin.shape)}.",
    )
    head_norm = q_norm is not None
    expect(
        (k_norm is not None) == head_norm
        and (not head_norm or (q_norm.shape == (head_dim,) and k_norm.shape == (head_dim,))),
        f"q_norm and k_norm must both be [d={head_dim}] or both be None.",
    )
    expect(
        k_out is None or (k_out.shape == k.shape and k_out.dtype == k.dtype
                          and k_out.stride(-1) == 1),
        f"k_out must be [T, nkv, d] {tuple(k.shape)} in {k.dtype}, rows contiguous in d.",
    )
    q = q if q.stride(-1) == 1 else q.contiguous()
    cos = cos.to(torch.float32).contiguous()
    sin = sin.to(torch.float32).contiguous()
    q_rot = torch.empty_like(q)
    if tokens == 0:
        return q_rot
    k_sz, v_sz, *sz_strides = scales_zeros_args(k_cache, k_scales_zeros, v_scales_zeros)
    rotate = rotates_keys(quant_policy, head_dim)
    _rope_store_kernel[(tokens,)](
        q,
        k,
        v,
        cos,
        sin,
        q_rot,
        k_cache,
        v_cache,
        k_sz,
        v_sz,
        slot_mapping.to(torch.int64),
        q_norm.contiguous() if head_norm else cos,
        k_norm.contiguous() if head_norm else cos,
        q_rot if k_out is None else k_out,
        norm_eps,
        norm_offset,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        v.stride(0),
        v.stride(1),
        cos.stride(0),
        sin.stride(0),
        q_rot.stride(0),
        q_rot.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        v_cache.stride(0),
        v_cache.stride(1),
        v_cache.stride(2),
        *sz_strides,
        0 if k_out is None else k_out.stride(0),
        0 if k_out is None else k_out.stride(1),
        head_dim**-0.5,
        NUM_HEADS=num_heads,
        NUM_KV_HEADS=num_kv_heads,
        HALF=half,
        BLOCK_H=_rows(num_heads, rotate),
        BLOCK_KV=_rows(num_kv_heads, rotate),
        BLOCK_HALF=triton.next_power_of_2(half),
        BLOCK_SIZE=block_size,
        QUANT=quant_policy,
        ROTATE_KEYS=rotate,
        HEAD_NORM=head_norm,
        HAS_OFFSET=norm_offset != 0.0,
        K_OUT=k_out is not None,
        # 32 heads x 64 pairs is 2048 rotations per token: 4 warps give each thread 16, enough
        # independent loads in flight to keep this memory-bound kernel at bandwidth.
        num_warps=4,
    )
    return q_rot
