"""Fused mixture of experts: each token's ``top_k`` (token, expert) pairs sorted by expert, then
two grouped GEMMs over the stacked expert weights.

1. :func:`moe_align` sorts the ``T * top_k`` pairs by expert and pads each expert's run to a
   multiple of ``BLOCK_M`` rows, so that every row block belongs to one expert. It is made of
   device ops with static shapes (no host sync), so a decode step stays capturable in a CUDA
   graph; blocks past the padded count exit at once.
2. The gate-up kernel multiplies each block's tokens by its expert's gate and up rows in one
   program (two accumulators over the same input tile) and writes ``act(gate) * up``.
3. The down kernel multiplies those rows by the expert's down projection, scales each by its
   routing weight and writes it at its pair's row; the ``top_k`` rows of a token are summed.

Only the experts some token chose are read, and each of their weights once per row block: at
decode (a few tokens) that is the whole cost of the layer, the bytes of the chosen experts.
Numerics follow :func:`.reference_moe.fused_moe`: fp32 accumulation, each projection rounded to
the activation dtype, the weighted output rounded once more.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .triton_activation import gate_activation
from .triton_common import dot_precision, expect, expect_dtype


@dataclass(frozen=True)
class MoEConfig:
    """Tiles of both kernels: ``block_m`` rows of (token, expert) pairs, ``block_n`` output
    features and ``block_k`` inputs per step."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3


def pick_config(num_pairs: int, num_experts: int) -> MoEConfig:
    """Tiles by how many pairs an expert gets on average. A decode step (a handful per expert,
    most of each block padding) streams weights: narrow output tiles give a grid of several
    hundred programs for bandwidth; a prefill is compute-bound and takes square 64-row tiles.
    Not yet measured on a GPU: ``scripts/bench_moe.py --sweep`` compares the alternatives."""
    per_expert = num_pairs / num_experts
    if per_expert <= 16:
        return MoEConfig(block_m=16, block_n=32, block_k=128)
    if per_expert <= 64:
        return MoEConfig(block_m=32, block_n=64, block_k=64)
    return MoEConfig(block_m=64, block_n=64, block_k=64)


def moe_align(topk_ids: torch.Tensor, num_experts: int,
              block_m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs of ``topk_ids: [T, top_k]`` (pair ``t * top_k + j``) sorted by expert, each
    expert's run padded to a multiple of ``block_m`` with the id ``T * top_k``: returns
    ``sorted_pairs [P]`` int32, ``block_experts [P / block_m]`` int32 (``num_experts`` past the
    end) and ``num_padded [1]`` int32, ``P`` the most padding can take for these shapes."""
    pairs = topk_ids.numel()
    flat = topk_ids.reshape(-1).to(torch.int64)
    device = flat.device
    # At most min(E, pairs) experts have pairs, each padded by fewer than block_m rows.
    capacity = triton.cdiv(pairs + min(num_experts, pairs) * (block_m - 1), block_m) * block_m
    counts = torch.zeros(num_experts, dtype=torch.int64, device=device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    padded_end = padded.cumsum(0)
    order = torch.argsort(flat, stable=True)
    sorted_experts = flat[order]
    # A pair's rank among its expert's pairs, and where that puts it in the padded layout.
    first = counts.cumsum(0) - counts
    rank = torch.arange(pairs, device=device) - first[sorted_experts]
    dest = padded_end[sorted_experts] - padded[sorted_experts] + rank
    sorted_pairs = torch.full((capacity,), pairs, dtype=torch.int32, device=device)
    sorted_pairs[dest] = order.to(torch.int32)
    block_starts = torch.arange(0, capacity, block_m, device=device)
    block_experts = torch.searchsorted(padded_end, block_starts, right=True).to(torch.int32)
    return sorted_pairs, block_experts, padded_end[-1:].to(torch.int32)


@triton.jit
def _block_rows(sorted_ptr, block_experts_ptr, num_padded_ptr, num_pairs,
                BLOCK_M: tl.constexpr):
    """This program's row block: its rows, their pairs, which rows hold a pair, its expert, and
    whether the block lies past the padded pairs (then the program does nothing)."""
    block = tl.program_id(0)
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    past = block * BLOCK_M >= tl.load(num_padded_ptr)
    pairs = tl.load(sorted_ptr + rows)
    expert = tl.load(block_experts_ptr + block).to(tl.int64)
    return rows, pairs, pairs < num_pairs, expert, past


@triton.jit
def _gate_up_kernel(
    x_ptr, w_ptr, out_ptr, sorted_ptr, block_experts_ptr, num_padded_ptr,
    num_pairs, top_k, hidden, inter,
    stride_xt, stride_we, stride_wn, stride_om,
    GELU: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows, pairs, valid, expert, past = _block_rows(sorted_ptr, block_experts_ptr,
                                                   num_padded_ptr, num_pairs, BLOCK_M)
    if past:
        return
    tokens = (pairs // top_k).to(tl.int64)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < inter
    offs_k = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + tokens[:, None] * stride_xt + offs_k[None, :]
    gate_ptrs = w_ptr + expert * stride_we + offs_n.to(tl.int64)[:, None] * stride_wn \
        + offs_k[None, :]
    up_ptrs = gate_ptrs + inter * stride_wn
    acc_gate = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc_up = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, hidden, BLOCK_K):
        k_mask = offs_k < hidden - k0
        x = tl.load(x_ptrs, mask=valid[:, None] & k_mask[None, :], other=0.0)
        w_mask = n_mask[:, None] & k_mask[None, :]
        w_gate = tl.load(gate_ptrs, mask=w_mask, other=0.0)
        w_up = tl.load(up_ptrs, mask=w_mask, other=0.0)
        acc_gate = tl.dot(x, tl.trans(w_gate), acc_gate, input_precision=DOT_PRECISION)
        acc_up = tl.dot(x, tl.trans(w_up), acc_up, input_precision=DOT_PRECISION)
        x_ptrs += BLOCK_K
        gate_ptrs += BLOCK_K
        up_ptrs += BLOCK_K
    dt = out_ptr.dtype.element_ty
    # Round as the unfused ops do: each projection, then act(gate), then the product.
    gate = acc_gate.to(dt).to(tl.float32)
    act = gate_activation(gate, GELU).to(dt).to(tl.float32)
    out = act * acc_up.to(dt).to(tl.float32)
    tl.store(out_ptr + rows.to(tl.int64)[:, None] * stride_om + offs_n[None, :], out.to(dt),
             mask=valid[:, None] & n_mask[None, :])


@triton.jit
def _down_kernel(
    a_ptr, w_ptr, weights_ptr, out_ptr, sorted_ptr, block_experts_ptr, num_padded_ptr,
    num_pairs, inter, hidden,
    stride_am, stride_we, stride_wn, stride_op,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows, pairs, valid, expert, past = _block_rows(sorted_ptr, block_experts_ptr,
                                                   num_padded_ptr, num_pairs, BLOCK_M)
    if past:
        return
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < hidden
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rows.to(tl.int64)[:, None] * stride_am + offs_k[None, :]
    w_ptrs = w_ptr + expert * stride_we + offs_n.to(tl.int64)[:, None] * stride_wn \
        + offs_k[None, :]
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, inter, BLOCK_K):
        k_mask = offs_k < inter - k0
        a = tl.load(a_ptrs, mask=valid[:, None] & k_mask[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=n_mask[:, None] & k_mask[None, :], other=0.0)
        acc = tl.dot(a, tl.trans(w), acc, input_precision=DOT_PRECISION)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    dt = out_ptr.dtype.element_ty
    weight = tl.load(weights_ptr + pairs, mask=valid, other=0.0)
    out = acc.to(dt).to(tl.float32) * weight[:, None]
    tl.store(out_ptr + pairs.to(tl.int64)[:, None] * stride_op + offs_n[None, :], out.to(dt),
             mask=valid[:, None] & n_mask[None, :])


def fused_moe_with_config(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor,
                          topk_weights: torch.Tensor, topk_ids: torch.Tensor, activation: str,
                          config: MoEConfig) -> torch.Tensor:
    """:func:`fused_moe` with explicit tiles (the entry point of ``scripts/bench_moe.py``)."""
    expect(x.dim() == 2, f"x must be [T, H], got {tuple(x.shape)}.")
    expect_dtype("x", x)
    tokens, hidden = x.shape
    experts, two_inter, _ = gate_up.shape
    inter = two_inter // 2
    expect(gate_up.shape == (experts, 2 * inter, hidden) and gate_up.dtype == x.dtype,
           f"gate_up must be [E, 2*I, H={hidden}] in {x.dtype}, got {tuple(gate_up.shape)} "
           f"{gate_up.dtype}.")
    expect(down.shape == (experts, hidden, inter) and down.dtype == x.dtype,
           f"down must be [E={experts}, H={hidden}, I={inter}] in {x.dtype}, got "
           f"{tuple(down.shape)} {down.dtype}.")
    expect(topk_ids.dim() == 2 and topk_ids.shape[0] == tokens
           and topk_weights.shape == topk_ids.shape,
           f"topk_ids and topk_weights must be [T={tokens}, top_k], got {tuple(topk_ids.shape)} "
           f"and {tuple(topk_weights.shape)}.")
    expect(activation in ("silu", "gelu_tanh"), f"unknown activation {activation!r}.")
    expect(gate_up.stride(-1) == 1 and down.stride(-1) == 1,
           "expert weights must be contiguous along their inputs.")
    top_k = topk_ids.shape[1]
    num_pairs = tokens * top_k
    if num_pairs == 0:
        return torch.zeros(tokens, hidden, dtype=x.dtype, device=x.device)
    x = x if x.stride(-1) == 1 else x.contiguous()
    sorted_pairs, block_experts, num_padded = moe_align(topk_ids, experts, config.block_m)
    blocks = block_experts.shape[0]
    launch = dict(DOT_PRECISION=dot_precision(x.dtype), BLOCK_M=config.block_m,
                  BLOCK_N=config.block_n, BLOCK_K=config.block_k,
                  num_warps=config.num_warps, num_stages=config.num_stages)
    hidden_rows = torch.empty(sorted_pairs.shape[0], inter, dtype=x.dtype, device=x.device)
    _gate_up_kernel[(blocks, triton.cdiv(inter, config.block_n))](
        x, gate_up, hidden_rows, sorted_pairs, block_experts, num_padded,
        num_pairs, top_k, hidden, inter,
        x.stride(0), gate_up.stride(0), gate_up.stride(1), hidden_rows.stride(0),
        GELU=activation == "gelu_tanh", **launch,
    )
    pair_out = torch.empty(num_pairs, hidden, dtype=x.dtype, device=x.device)
    _down_kernel[(blocks, triton.cdiv(hidden, config.block_n))](
        hidden_rows, down, topk_weights.to(torch.float32).contiguous(), pair_out, sorted_pairs,
        block_experts, num_padded, num_pairs, inter, hidden,
        hidden_rows.stride(0), down.stride(0), down.stride(1), pair_out.stride(0), **launch,
    )
    return pair_out.view(tokens, top_k, hidden).sum(dim=1, dtype=torch.float32).to(x.dtype)


def fused_moe(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor,
              topk_weights: torch.Tensor, topk_ids: torch.Tensor,
              activation: str = "silu") -> torch.Tensor:
    """``sum_j w[t, j] * expert_{ids[t, j]}(x[t])`` for ``x: [T, H]`` over stacked experts
    ``gate_up: [E, 2*I, H]`` and ``down: [E, H, I]``: the op :func:`.reference_moe.fused_moe`
    defines. Tiles from :func:`pick_config`."""
    config = pick_config(topk_ids.numel(), gate_up.shape[0])
    return fused_moe_with_config(x, gate_up, down, topk_weights, topk_ids, activation, config)
