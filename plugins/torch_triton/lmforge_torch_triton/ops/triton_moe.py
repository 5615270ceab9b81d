"""Fused mixture of experts: each token's ``top_k`` (token, expert) pairs grouped by expert, then
two grouped GEMMs over the stacked expert weights.

1. :func:`moe_route` picks each token's experts (softmax and top-k, one kernel), and
   :func:`moe_align` sorts the ``T * top_k`` pairs by expert and pads each expert's run to a
   multiple of ``BLOCK_M`` rows, so that every row block belongs to one expert. Shapes are static
   and nothing syncs with the host, so a decode step stays capturable in a CUDA graph; row blocks
   past the last run exit at once.
2. The gate-up kernel multiplies each block's tokens by its expert's gate and up rows in one
   program (two accumulators over the same input tile) and writes ``act(gate) * up``.
3. The down kernel multiplies those rows by the expert's down projection, scales each by its
   routing weight and writes it at its pair's row; the ``top_k`` rows of a token are summed.

A decode step (at most :data:`PAIR_PATH_MAX_PAIRS` pairs, see :func:`use_pair_path`) skips the
sort: the gate-up grid has one program row per pair, and the first pair of each expert gathers
that expert's pairs itself from the few ids of the step (the others exit), so no alignment runs.
Its down kernel gives each token's output tile one program that loops over the token's experts
and sums their weighted outputs in registers: no per-pair output and no separate sum. A layer is
then three launches (routing, two GEMMs) instead of five.

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
from .triton_common import dot_precision, expect, expect_dtype, load_tile


@dataclass(frozen=True)
class MoEConfig:
    """Tiles of both kernels: ``block_m`` rows of (token, expert) pairs, ``block_n`` output
    features and ``block_k`` inputs per step."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int = 4
    num_stages: int = 3


# The most (token, expert) pairs of a call that takes the pair path (decode steps).
PAIR_PATH_MAX_PAIRS = 64


def use_pair_path(tokens: int, top_k: int, num_experts: int) -> bool:
    """Whether a call skips the alignment (see the module docstring). The pair path's down kernel
    reads an expert's down weights once per token that chose it, so it pays only where tokens
    seldom share an expert: one token, or few pairs among many experts (Qwen3-MoE's decode
    batches, not Mixtral's 8 experts beyond two tokens)."""
    pairs = tokens * top_k
    return tokens == 1 or pairs <= min(PAIR_PATH_MAX_PAIRS, num_experts // 2)


def pick_config(num_pairs: int, num_experts: int) -> MoEConfig:
    """Tiles by how many pairs an expert gets on average. A decode step (a handful per expert,
    most of each block padding) streams weights: narrow output tiles give a grid of several
    hundred programs for bandwidth; a prefill is compute-bound and takes square 64-row tiles.
    Not yet measured on a GPU: the sweep of ``scripts/bench_moe.py`` compares the alternatives."""
    per_expert = num_pairs / num_experts
    if per_expert <= 16:
        return MoEConfig(block_m=16, block_n=32, block_k=128)
    if per_expert <= 64:
        return MoEConfig(block_m=32, block_n=64, block_k=64)
    return MoEConfig(block_m=64, block_n=64, block_k=64)


@triton.jit
def _route_kernel(logits_ptr, weights_ptr, ids_ptr, num_experts, stride_t,
                  TOP_K: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
                  RENORMALIZE: tl.constexpr):
    """One token: softmax over its expert logits in fp32, the ``TOP_K`` largest by repeated
    argmax (the lower expert id first on a tie), renormalized when asked."""
    token = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_E)
    logits = tl.load(logits_ptr + token * stride_t + offs, mask=offs < num_experts,
                     other=float("-inf")).to(tl.float32)
    probs = tl.exp(logits - tl.max(logits, 0))
    probs = probs / tl.sum(probs, 0)
    slots = tl.arange(0, BLOCK_K)
    top = tl.zeros([BLOCK_K], dtype=tl.float32)
    ids = tl.zeros([BLOCK_K], dtype=tl.int32)
    for j in tl.static_range(TOP_K):
        best = tl.argmax(probs, 0)
        top = tl.where(slots == j, tl.max(probs, 0), top)
        ids = tl.where(slots == j, best, ids)
        probs = tl.where(offs == best, -1.0, probs)
    if RENORMALIZE:
        top = top / tl.sum(top, 0)
    tl.store(weights_ptr + token * TOP_K + slots, top, mask=slots < TOP_K)
    tl.store(ids_ptr + token * TOP_K + slots, ids, mask=slots < TOP_K)


def moe_route(router_logits: torch.Tensor, top_k: int,
              renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`.reference_moe.moe_route` in one kernel: float32 weights and int32 expert ids
    ``[T, top_k]``."""
    expect(router_logits.dim() == 2, f"router_logits must be [T, E], got "
           f"{tuple(router_logits.shape)}.")
    tokens, experts = router_logits.shape
    expect(1 <= top_k <= experts, f"top_k must be 1 to {experts}, got {top_k}.")
    router_logits = router_logits if router_logits.stride(-1) == 1 else router_logits.contiguous()
    weights = torch.empty(tokens, top_k, dtype=torch.float32, device=router_logits.device)
    ids = torch.empty(tokens, top_k, dtype=torch.int32, device=router_logits.device)
    if tokens:
        _route_kernel[(tokens,)](
            router_logits, weights, ids, experts, router_logits.stride(0), TOP_K=top_k,
            BLOCK_E=triton.next_power_of_2(experts), BLOCK_K=triton.next_power_of_2(top_k),
            RENORMALIZE=renormalize, num_warps=1 if experts <= 256 else 4,
        )
    return weights, ids


@triton.jit
def _align_kernel(ids_ptr, sorted_ptr, block_experts_ptr, block_rows_ptr, num_pairs, num_blocks,
                  num_experts, BLOCK_M: tl.constexpr, BLOCK_E: tl.constexpr,
                  CHUNK: tl.constexpr, BLOCK_B: tl.constexpr):
    """One program lays out every pair: counts per expert, each expert's run padded to
    BLOCK_M rows, each pair at its expert's start plus its rank among that expert's pairs (in
    pair order), and per row block its expert and how many of its rows hold pairs."""
    experts = tl.arange(0, BLOCK_E)
    counts = tl.zeros([BLOCK_E], dtype=tl.int32)
    for c0 in range(0, num_pairs, CHUNK):
        offs = c0 + tl.arange(0, CHUNK)
        ids = tl.load(ids_ptr + offs, mask=offs < num_pairs, other=-1)
        counts += tl.sum((ids[:, None] == experts[None, :]).to(tl.int32), 0)
    padded = (counts + BLOCK_M - 1) // BLOCK_M * BLOCK_M
    ends = tl.cumsum(padded, 0)
    starts = ends - padded
    seen = tl.zeros([BLOCK_E], dtype=tl.int32)
    for c0 in range(0, num_pairs, CHUNK):
        offs = c0 + tl.arange(0, CHUNK)
        ids = tl.load(ids_ptr + offs, mask=offs < num_pairs, other=-1)
        hit = (ids[:, None] == experts[None, :]).to(tl.int32)
        before = tl.cumsum(hit, 0) - hit + seen[None, :]  # the pair's expert's earlier pairs
        row = tl.sum(hit * (starts[None, :] + before), 1)
        tl.store(sorted_ptr + row, offs, mask=offs < num_pairs)
        seen += tl.sum(hit, 0)
    for b0 in range(0, num_blocks, BLOCK_B):
        blocks = b0 + tl.arange(0, BLOCK_B)
        first = blocks * BLOCK_M
        # The block's expert: the number of experts whose padded run ends at or before it.
        expert = tl.sum((ends[None, :] <= first[:, None]).to(tl.int32), 1)
        mine = experts[None, :] == expert[:, None]
        end = tl.sum(tl.where(mine, starts + counts, 0), 1)
        rows = tl.minimum(tl.maximum(end - first, 0), BLOCK_M)
        tl.store(block_experts_ptr + blocks, tl.minimum(expert, num_experts - 1),
                 mask=blocks < num_blocks)
        tl.store(block_rows_ptr + blocks, rows, mask=blocks < num_blocks)


def moe_align(topk_ids: torch.Tensor, num_experts: int,
              block_m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs of ``topk_ids: [T, top_k]`` (pair ``t * top_k + j``) sorted by expert, each
    expert's run padded to a multiple of ``block_m`` rows: ``sorted_pairs [P]`` int32 (padding
    rows unwritten), and per row block its expert and how many of its rows hold pairs (0 for
    the blocks past the last run), ``P`` the most padding can take for these shapes."""
    pairs = topk_ids.numel()
    # At most min(E, pairs) experts have pairs, each padded by fewer than block_m rows.
    num_blocks = triton.cdiv(pairs + min(num_experts, pairs) * (block_m - 1), block_m)
    device = topk_ids.device
    sorted_pairs = torch.empty(num_blocks * block_m, dtype=torch.int32, device=device)
    block_experts = torch.empty(num_blocks, dtype=torch.int32, device=device)
    block_rows = torch.empty(num_blocks, dtype=torch.int32, device=device)
    if pairs:
        block_e = max(16, triton.next_power_of_2(num_experts))
        _align_kernel[(1,)](
            topk_ids.reshape(-1), sorted_pairs, block_experts, block_rows, pairs, num_blocks,
            num_experts, BLOCK_M=block_m, BLOCK_E=block_e,
            CHUNK=max(16, min(64, 8192 // block_e)), BLOCK_B=max(16, min(64, 8192 // block_e)),
            num_warps=4,
        )
    return sorted_pairs, block_experts, block_rows


@triton.jit
def _block_rows(sorted_ptr, block_experts_ptr, block_rows_ptr, BLOCK_M: tl.constexpr):
    """This program's row block: its rows, which of them hold a pair, their pairs, its expert,
    and whether it holds none (then the program does nothing)."""
    block = tl.program_id(0)
    count = tl.load(block_rows_ptr + block)
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = tl.arange(0, BLOCK_M) < count
    pairs = tl.load(sorted_ptr + rows, mask=valid, other=0)
    expert = tl.load(block_experts_ptr + block).to(tl.int64)
    return rows, valid, pairs, expert, count == 0


@triton.jit
def _pair_rows(ids_ptr, num_pairs, BLOCK_M: tl.constexpr):
    """The pair path's rows: this program's pair, when it is the first to choose its expert,
    with every other pair that chose it, in pair order (``BLOCK_M`` covers all ``num_pairs``);
    a pair's hidden row is its own index. Returns what :func:`_block_rows` does, the last value
    true when an earlier pair owns the expert (then the program does nothing)."""
    pair = tl.program_id(0)
    offs = tl.arange(0, BLOCK_M)
    ids = tl.load(ids_ptr + offs, mask=offs < num_pairs, other=-1)
    expert = tl.load(ids_ptr + pair)
    hit = (ids == expert).to(tl.int32)
    first = tl.min(tl.where(hit != 0, offs, BLOCK_M), 0)
    rank = tl.cumsum(hit, 0) - hit
    # Row m of the tile: the pair of rank m among the expert's pairs.
    owned = (hit[None, :] != 0) & (rank[None, :] == offs[:, None])
    pairs = tl.sum(tl.where(owned, offs[None, :], 0), 1)
    valid = offs < tl.sum(hit, 0)
    return pairs, valid, pairs, expert.to(tl.int64), first != pair


@triton.jit
def _gate_up_kernel(
    x_ptr, w_ptr, out_ptr, sorted_ptr, block_experts_ptr, block_rows_ptr, ids_ptr,
    num_pairs, top_k, hidden, inter,
    stride_xt, stride_we, stride_wn, stride_om,
    SORTED: tl.constexpr,
    GELU: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    if SORTED:
        rows, valid, pairs, expert, skip = _block_rows(sorted_ptr, block_experts_ptr,
                                                       block_rows_ptr, BLOCK_M)
    else:
        rows, valid, pairs, expert, skip = _pair_rows(ids_ptr, num_pairs, BLOCK_M)
    if skip:
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
    a_ptr, w_ptr, weights_ptr, out_ptr, sorted_ptr, block_experts_ptr, block_rows_ptr,
    inter, hidden,
    stride_am, stride_we, stride_wn, stride_op,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows, valid, pairs, expert, empty = _block_rows(sorted_ptr, block_experts_ptr,
                                                    block_rows_ptr, BLOCK_M)
    if empty:
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


@triton.jit
def _down_sum_kernel(
    a_ptr, w_ptr, weights_ptr, ids_ptr, out_ptr,
    top_k, inter, hidden,
    stride_am, stride_we, stride_wn, stride_ot,
    EVEN: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """The pair path's down projection: one token's ``BLOCK_N`` outputs, its ``top_k`` experts'
    weighted outputs summed in order. One program owning the tile, rather than one per pair
    adding into a shared fp32 buffer with atomics, keeps the sum deterministic and needs neither
    a zeroed buffer nor a cast kernel; a GEMV's thin, long tiles keep the grid wide at one token.
    """
    token = tl.program_id(0).to(tl.int64)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = offs_n < hidden
    offs_k = tl.arange(0, BLOCK_K)
    dt = out_ptr.dtype.element_ty
    out = tl.zeros([BLOCK_N], dtype=tl.float32)
    for j in range(top_k):
        pair = token * top_k + j
        expert = tl.load(ids_ptr + pair).to(tl.int64)
        a_ptrs = a_ptr + pair * stride_am + offs_k
        w_ptrs = w_ptr + expert * stride_we + offs_n.to(tl.int64)[:, None] * stride_wn \
            + offs_k[None, :]
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        for k0 in range(0, inter, BLOCK_K):
            k_mask = offs_k < inter - k0
            a = load_tile(a_ptrs, k_mask, EVEN, "evict_last")
            w = load_tile(w_ptrs, n_mask[:, None] & k_mask[None, :], EVEN, "evict_first")
            acc += w.to(tl.float32) * a.to(tl.float32)[None, :]
            a_ptrs += BLOCK_K
            w_ptrs += BLOCK_K
        # Rounded as the reference rounds: the projection, then the weighted output.
        y = tl.sum(acc, 1).to(dt).to(tl.float32) * tl.load(weights_ptr + pair)
        out += y.to(dt).to(tl.float32)
    tl.store(out_ptr + token * stride_ot + offs_n, out.to(dt), mask=n_mask)


# The pair path's down tiles: a one-row GEMV's (``triton_gemv``), 4 weight rows by up to 2048
# inputs per step, the split that measured fastest there on every shape.
DOWN_SUM_BLOCK_N = 4
DOWN_SUM_MAX_BLOCK_K = 2048


def _fused_moe_pairs(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor,
                     topk_weights: torch.Tensor, topk_ids: torch.Tensor, gelu: bool,
                     config: MoEConfig) -> torch.Tensor:
    """The pair path (see the module docstring): two launches, no alignment, no sum kernel."""
    tokens, hidden = x.shape
    inter = down.shape[2]
    top_k = topk_ids.shape[1]
    pairs = tokens * top_k
    ids = topk_ids.contiguous()
    # One tile covers every pair, so an expert chosen by all of them still fits one program.
    block_m = max(16, triton.next_power_of_2(pairs))
    hidden_rows = torch.empty(pairs, inter, dtype=x.dtype, device=x.device)
    _gate_up_kernel[(pairs, triton.cdiv(inter, config.block_n))](
        x, gate_up, hidden_rows, ids, ids, ids, ids, pairs, top_k, hidden, inter,
        x.stride(0), gate_up.stride(0), gate_up.stride(1), hidden_rows.stride(0),
        SORTED=False, GELU=gelu, DOT_PRECISION=dot_precision(x.dtype), BLOCK_M=block_m,
        BLOCK_N=config.block_n, BLOCK_K=config.block_k, num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    out = torch.empty(tokens, hidden, dtype=x.dtype, device=x.device)
    block_k = min(DOWN_SUM_MAX_BLOCK_K, max(16, triton.next_power_of_2(inter)))
    _down_sum_kernel[(tokens, triton.cdiv(hidden, DOWN_SUM_BLOCK_N))](
        hidden_rows, down, topk_weights.to(torch.float32).contiguous(), ids, out,
        top_k, inter, hidden,
        hidden_rows.stride(0), down.stride(0), down.stride(1), out.stride(0),
        EVEN=inter % block_k == 0 and hidden % DOWN_SUM_BLOCK_N == 0,
        BLOCK_N=DOWN_SUM_BLOCK_N, BLOCK_K=block_k, num_warps=4,
    )
    return out


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
    gelu = activation == "gelu_tanh"
    if use_pair_path(tokens, top_k, experts):
        return _fused_moe_pairs(x, gate_up, down, topk_weights, topk_ids, gelu, config)
    sorted_pairs, block_experts, block_rows = moe_align(topk_ids, experts, config.block_m)
    blocks = block_experts.shape[0]
    launch = dict(DOT_PRECISION=dot_precision(x.dtype), BLOCK_M=config.block_m,
                  BLOCK_N=config.block_n, BLOCK_K=config.block_k,
                  num_warps=config.num_warps, num_stages=config.num_stages)
    hidden_rows = torch.empty(sorted_pairs.shape[0], inter, dtype=x.dtype, device=x.device)
    _gate_up_kernel[(blocks, triton.cdiv(inter, config.block_n))](
        x, gate_up, hidden_rows, sorted_pairs, block_experts, block_rows, topk_ids, num_pairs,
        top_k, hidden, inter,
        x.stride(0), gate_up.stride(0), gate_up.stride(1), hidden_rows.stride(0),
        SORTED=True, GELU=gelu, **launch,
    )
    pair_out = torch.empty(num_pairs, hidden, dtype=x.dtype, device=x.device)
    _down_kernel[(blocks, triton.cdiv(hidden, config.block_n))](
        hidden_rows, down, topk_weights.to(torch.float32).contiguous(), pair_out, sorted_pairs,
        block_experts, block_rows, inter, hidden,
        hidden_rows.stride(0), down.stride(0), down.stride(1), pair_out.stride(0), **launch,
    )
    # Summed in fp32 and rounded once (torch accumulates 16-bit sums in fp32).
    return pair_out.view(tokens, top_k, hidden).sum(dim=1)


def fused_moe(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor,
              topk_weights: torch.Tensor, topk_ids: torch.Tensor,
              activation: str = "silu") -> torch.Tensor:
    """``sum_j w[t, j] * expert_{ids[t, j]}(x[t])`` for ``x: [T, H]`` over stacked experts
    ``gate_up: [E, 2*I, H]`` and ``down: [E, H, I]``: the op :func:`.reference_moe.fused_moe`
    defines. Tiles from :func:`pick_config`."""
    config = pick_config(topk_ids.numel(), gate_up.shape[0])
    return fused_moe_with_config(x, gate_up, down, topk_weights, topk_ids, activation, config)
