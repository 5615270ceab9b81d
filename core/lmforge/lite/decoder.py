"""A plain-PyTorch Llama-family decoder layer for calibration: full sequences, no KV cache.

A layer's weights are a dict under canonical names without the ``layers.{i}.`` prefix
(``input_norm``, ``attn.q.weight``, ``attn.q.bias``, ``mlp.down.weight``, ...). Every linear goes
through a :data:`Projector`, ``proj(name, x)`` for ``name`` like ``"attn.q"``, so the same code
runs the float layer, records the inputs of its linears, or tries quantized weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model.config import ModelConfig
from ..model.rope import rope_inv_freq

LayerWeights = dict[str, torch.Tensor]
Projector = Callable[[str, torch.Tensor], torch.Tensor]

LINEARS = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down")


def dense_projector(layer: LayerWeights) -> Projector:
    """``x @ W.T + b`` with the layer's own (float) weights."""

    def proj(name: str, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, layer[f"{name}.weight"], layer.get(f"{name}.bias"))

    return proj


@dataclass
class Rotary:
    """cos/sin tables ``[T, head_dim / 2]`` for positions ``0..T-1`` (every sample starts at 0)."""

    cos: torch.Tensor
    sin: torch.Tensor

    @classmethod
    def build(cls, config: ModelConfig, seqlen: int, device, dtype=torch.float32) -> Rotary:
        inv_freq = rope_inv_freq(config.rope, config.head_dim, seqlen).to(device)
        freqs = torch.arange(seqlen, device=device, dtype=torch.float32)[:, None] * inv_freq
        return cls(freqs.cos().to(dtype), freqs.sin().to(dtype))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate ``x: [B, heads, T, d]`` (HF's rotate-half layout)."""
        x1, x2 = x.chunk(2, dim=-1)
        cos, sin = self.cos.to(x.dtype), self.sin.to(x.dtype)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's RMSNorm: normalize in float32, cast back, then scale by the weight."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(x.dtype)


def attention_heads(
    config: ModelConfig, x: torch.Tensor, rotary: Rotary, proj: Projector
) -> torch.Tensor:
    """Causal self-attention of the normalized input ``x: [B, T, H]`` up to the input of the
    output projection, ``[B, T, num_heads * head_dim]``."""
    b, t, _ = x.shape
    nh, nkv, d = config.num_heads, config.num_kv_heads, config.head_dim
    q = proj("attn.q", x).view(b, t, nh, d).transpose(1, 2)
    k = proj("attn.k", x).view(b, t, nkv, d).transpose(1, 2)
    v = proj("attn.v", x).view(b, t, nkv, d).transpose(1, 2)
    q, k = rotary.apply(q), rotary.apply(k)
    if nkv != nh:
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
    window = config.sliding_window
    if window and t > window:
        pos = torch.arange(t, device=x.device)
        mask = (pos[None, :] <= pos[:, None]) & (pos[:, None] - pos[None, :] < window)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    else:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return out.transpose(1, 2).reshape(b, t, nh * d)


def attention(config: ModelConfig, x: torch.Tensor, rotary: Rotary, proj: Projector) -> torch.Tensor:
    """The attention block's output for the normalized input ``x``."""
    return proj("attn.o", attention_heads(config, x, rotary, proj))


def mlp_hidden(x: torch.Tensor, proj: Projector) -> torch.Tensor:
    """``silu(gate(x)) * up(x)``: the down projection's input."""
    return F.silu(proj("mlp.gate", x)) * proj("mlp.up", x)


def mlp(x: torch.Tensor, proj: Projector) -> torch.Tensor:
    """The gated MLP's output for the normalized input ``x``."""
    return proj("mlp.down", mlp_hidden(x, proj))


def decoder_layer(
    config: ModelConfig, layer: LayerWeights, h: torch.Tensor, rotary: Rotary, proj: Projector
) -> torch.Tensor:
    """One pre-norm decoder layer: ``h + attn(norm(h))``, then ``+ mlp(norm(.))``."""
    eps = config.norm_eps
    h = h + attention(config, rms_norm(h, layer["input_norm"], eps), rotary, proj)
    return h + mlp(rms_norm(h, layer["post_attn_norm"], eps), proj)
