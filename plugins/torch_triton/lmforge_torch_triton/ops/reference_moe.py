"""Mixture-of-experts ops in plain PyTorch: the CPU path, and the reference of the fused MoE
kernel (``triton_moe.py``).

A MoE layer holds its experts stacked: ``gate_up: [E, 2*I, H]`` (each expert's gate rows, then
its up rows) and ``down: [E, H, I]``. Each token goes to ``top_k`` experts (:func:`moe_route`);
:func:`fused_moe` sums their gated-MLP outputs weighted by the routing weights. Numerics follow
transformers: each expert's projections round to the activation dtype, the weighted output is
formed in float32 and rounded once more before the sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import gelu_tanh_and_mul, silu_and_mul

ACTIVATIONS = {"silu": silu_and_mul, "gelu_tanh": gelu_tanh_and_mul}


def moe_route(router_logits: torch.Tensor, top_k: int,
              renormalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Each token's experts from its router logits ``[T, E]``: the ``top_k`` largest softmax
    probabilities (float32) and their expert ids ``[T, top_k]`` (int64), the probabilities
    divided by their sum when ``renormalize``."""
    probs = torch.softmax(router_logits.float(), dim=-1)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids


def fused_moe(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor,
              topk_weights: torch.Tensor, topk_ids: torch.Tensor,
              activation: str = "silu") -> torch.Tensor:
    """``sum_j w[t, j] * expert_{ids[t, j]}(x[t])`` for ``x: [T, H]``, each expert a gated MLP
    (``activation`` "silu" or "gelu_tanh") over ``gate_up[e]`` and ``down[e]``. Only experts
    some token chose are computed. Returns ``[T, H]`` in ``x``'s dtype."""
    act = ACTIVATIONS[activation]
    out = torch.zeros_like(x)
    for expert in torch.unique(topk_ids).tolist():
        tokens, slots = torch.where(topk_ids == expert)
        hidden = act(F.linear(x[tokens], gate_up[expert]))
        y = F.linear(hidden, down[expert]) * topk_weights[tokens, slots, None]
        out.index_add_(0, tokens, y.to(out.dtype))
    return out
