"""Plain PyTorch twins of the library's kernels and of its forward step: the references the
kernel tests compare against, rounding to the model dtype where the kernels do (which is where
transformers' 16-bit modules round). Slow and simple on purpose; any device.
"""

from __future__ import annotations

import torch

from .steps import HostStep


def _round(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype).float()


def embedding(embed: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return embed[ids]


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float, residual: torch.Tensor | None = None,
             index: torch.Tensor | None = None) -> torch.Tensor:
    """Rows ``index`` (or all) of ``x`` (+ ``residual``, updated in place), normalized."""
    rows = index.long() if index is not None else torch.arange(x.shape[0], device=x.device)
    v = x[rows].float()
    if residual is not None:
        v = _round(v + residual[rows].float(), x.dtype)
        residual[rows] = v.to(x.dtype)
    inv = torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)
    return (w.float() * _round(v * inv, x.dtype)).to(x.dtype)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    g, u = gate_up.float().chunk(2, dim=-1)
    return (_round(torch.nn.functional.silu(g), gate_up.dtype) * u).to(gate_up.dtype)


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x.float() @ w.float().T).to(x.dtype)


def rope_kv(qkv: torch.Tensor, bias: torch.Tensor | None, inv_freq: torch.Tensor,
            positions: torch.Tensor, slots: torch.Tensor, k_cache: torch.Tensor,
            v_cache: torch.Tensor, heads: int, kv_heads: int) -> None:
    """Adds the bias, rotates q in place in ``qkv`` and writes rotated k and v to their slots."""
    dtype, d = qkv.dtype, k_cache.shape[-1]
    x = qkv.float()
    if bias is not None:
        x = _round(x + bias.float(), dtype)
    x = x.view(qkv.shape[0], heads + 2 * kv_heads, d)
    angle = positions.float()[:, None] * inv_freq.float()[None, :]
    cos, sin = _round(angle.cos(), dtype)[:, None, :], _round(angle.sin(), dtype)[:, None, :]
    rot = x[:, : heads + kv_heads]
    a, b = rot[..., : d // 2], rot[..., d // 2:]
    ra = _round(_round(a * cos, dtype) - _round(b * sin, dtype), dtype)
    rb = _round(_round(b * cos, dtype) + _round(a * sin, dtype), dtype)
    rot = torch.cat([ra, rb], dim=-1)
    qkv.view(qkv.shape[0], -1, d)[:, :heads] = rot[:, :heads].to(dtype)
    keep = slots >= 0
    rows = slots[keep].long()
    flat_k = k_cache.view(-1, kv_heads, d)
    flat_v = v_cache.view(-1, kv_heads, d)
    flat_k[rows] = rot[keep, heads:].to(dtype)
    flat_v[rows] = x[keep, heads + kv_heads:].to(dtype)


def _gather_kv(cache: torch.Tensor, table: torch.Tensor, length: int) -> torch.Tensor:
    """``[length, kv_heads, head_dim]`` of one sequence from its paged blocks."""
    bs = cache.shape[1]
    pos = torch.arange(length, device=cache.device)
    return cache[table.long()[pos // bs], pos % bs]


def attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
              table: torch.Tensor, kv_len: int, scale: float, window: int = 0) -> torch.Tensor:
    """Causal attention of one sequence's last ``len(q)`` positions over its cached K/V.
    ``q``: ``[q_len, heads, head_dim]``; returns the same shape."""
    q_len, heads, _ = q.shape
    k = _gather_kv(k_cache, table, kv_len).float()
    v = _gather_kv(v_cache, table, kv_len).float()
    group = heads // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k) * scale
    q_pos = torch.arange(kv_len - q_len, kv_len, device=q.device)[:, None]
    k_pos = torch.arange(kv_len, device=q.device)[None, :]
    mask = k_pos <= q_pos
    if window > 0:
        mask &= k_pos > q_pos - window
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).to(q.dtype)


def paged_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    block_tables: torch.Tensor, kv_lens: list[int], q_starts: list[int],
                    scale: float, window: int = 0) -> torch.Tensor:
    """What the decode and prefill kernels compute together, sequence by sequence.
    ``q``: ``[tokens, heads, head_dim]``."""
    out = torch.empty_like(q)
    for i, kv_len in enumerate(kv_lens):
        rows = slice(q_starts[i], q_starts[i + 1])
        out[rows] = attention(q[rows], k_cache, v_cache, block_tables[i], kv_len, scale, window)
    return out


def forward(weights, config, kv_caches, inv_freq: torch.Tensor, input_ids: torch.Tensor,
            plan: HostStep) -> torch.Tensor:
    """The library's whole step: float32 logits of ``plan.logit_rows``. ``weights`` is an
    :class:`~.weights.EngineWeights`; ``kv_caches`` one ``(k, v)`` pair per layer."""
    c, device = config, input_ids.device
    heads, kv_heads, d = c.num_heads, c.num_kv_heads, c.head_dim
    positions = torch.tensor(plan.positions, device=device)
    slots = torch.tensor(plan.slots, device=device)
    tables = torch.tensor(plan.block_tables, device=device).view(-1, plan.width)
    scale, window = d**-0.5, c.sliding_window or 0
    residual = embedding(weights.top["embed"], input_ids)
    x = None
    for layer, (k_cache, v_cache) in zip(weights.layers, kv_caches, strict=True):
        normed = rms_norm(x if x is not None else residual, layer["input_norm"], c.norm_eps,
                          residual if x is not None else None)
        qkv = linear(normed, layer["qkv"])
        rope_kv(qkv, layer.get("qkv_bias"), inv_freq, positions, slots, k_cache, v_cache, heads,
                kv_heads)
        q = qkv[:, : heads * d].reshape(-1, heads, d)
        attn = paged_attention(q, k_cache, v_cache, tables, plan.kv_lens, plan.q_starts, scale,
                               window)
        x = linear(attn.reshape(-1, heads * d), layer["o"])
        normed = rms_norm(x, layer["post_norm"], c.norm_eps, residual)
        x = linear(silu_mul(linear(normed, layer["gate_up"])), layer["down"])
    index = torch.tensor(plan.logit_rows, device=device, dtype=torch.long)
    normed = rms_norm(x, weights.top["norm"], c.norm_eps, residual, index)
    return linear(normed, weights.lm_head).float()
