"""The merge step of split-K decode attention (``triton_decode_attention.py``): each (sequence,
query head) combines its splits' partial outputs through their log-sum-exp."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .decode_launch import MAX_SPLITS


@triton.jit
def split_tiles(kv_len, window, num_splits, BLOCK_N: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """How the split and merge kernels partition one sequence: its first attended position,
    its end tile, and the tiles per split. The splits share the sequence's own tiles (from the
    window's start) evenly, so a short context still spreads over the splits of a grid sized
    for the longest one."""
    if HAS_WINDOW:
        first_pos = tl.maximum(kv_len - window, 0)
    else:
        first_pos = 0
    end_tile = tl.cdiv(kv_len, BLOCK_N)
    return first_pos, end_tile, tl.cdiv(end_tile - first_pos // BLOCK_N, num_splits)


@triton.jit(do_not_specialize=["num_splits", "stride_lb", "stride_lh"],
            do_not_specialize_on_alignment=["kv_lens_ptr"])
def _decode_merge_kernel(
    partial_ptr, lse_ptr, out_ptr, kv_lens_ptr, window, num_splits, stride_pb, stride_ph,
    stride_ps, stride_lb, stride_lh, stride_ob, stride_oh,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    kv_len = tl.load(kv_lens_ptr + seq)
    first_pos, end_tile, tiles_per_split = split_tiles(
        kv_len, window, num_splits, BLOCK_N, HAS_WINDOW
    )
    # The splits that hold tiles of this sequence; the others stored nothing.
    num_active = tl.cdiv(end_tile - first_pos // BLOCK_N, tiles_per_split)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < num_active
    d_mask = offs_d < HEAD_DIM

    lse = tl.load(
        lse_ptr + seq * stride_lb + head * stride_lh + offs_s, mask=s_mask, other=float("-inf")
    )
    # Every sequence has at least its own token, so at least one split is finite.
    weights = tl.exp2(lse - tl.max(lse, 0))
    partial = tl.load(
        partial_ptr
        + seq * stride_pb
        + head * stride_ph
        + offs_s[:, None] * stride_ps
        + offs_d[None, :],
        mask=s_mask[:, None] & d_mask[None, :],
        other=0.0,
    )
    out = tl.sum(partial * weights[:, None], 0) / tl.sum(weights, 0)
    tl.store(
        out_ptr + seq * stride_ob + head * stride_oh + offs_d,
        out.to(out_ptr.dtype.element_ty),
        mask=d_mask,
    )


def merge_splits(partial: torch.Tensor, lse: torch.Tensor, out: torch.Tensor,
                 kv_lens: torch.Tensor, window: int, num_splits: int, block_n: int,
                 has_window: bool) -> None:
    """Write ``out [B, nh, d]`` from the splits' fp32 ``partial [B, nh, splits, d]`` and
    ``lse [B, nh, splits]`` (base 2)."""
    batch, num_heads, head_dim = out.shape
    _decode_merge_kernel[(batch, num_heads)](
        partial, lse, out, kv_lens, window, num_splits, *partial.stride()[:3],
        *lse.stride()[:2], out.stride(0), out.stride(1),
        HEAD_DIM=head_dim,
        BLOCK_D=triton.next_power_of_2(head_dim),
        # One width for every split count: the count changes from step to step, and a
        # constexpr that followed it would compile a kernel per power of two mid-serving.
        BLOCK_S=triton.next_power_of_2(MAX_SPLITS),
        BLOCK_N=block_n,
        HAS_WINDOW=has_window,
        num_warps=4 if num_splits <= 32 else 8,
    )
