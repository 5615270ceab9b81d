"""Which linears share an input, and where a per-channel scale of that input can be folded.

AWQ and SmoothQuant both divide a linear's input channels by a scale ``s`` and multiply the
weight's columns by it, which leaves the float result unchanged. The division is folded into the
operation that produces the input: an RMSNorm (its weight) or a linear (its rows). Per layer:

- ``attn_in``: ``input_norm`` -> q, k, v (the loss looks at the attention block's output);
- ``o_in``: v -> o, only when K/V heads are not shared (with grouped-query attention v's output
  channels do not line up with o's inputs);
- ``mlp_in``: ``post_attn_norm`` -> gate, up (the loss looks at the MLP's output);
- ``down_in``: up -> down.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.config import ModelConfig
from .decoder import (
    LayerWeights,
    Projector,
    Rotary,
    attention,
    attention_heads,
    dense_projector,
    mlp,
    mlp_hidden,
    rms_norm,
)


@dataclass(frozen=True)
class ScaleGroup:
    """Linears that take the same input, named by where that input comes from."""

    name: str
    prev: str
    linears: tuple[str, ...]

    @property
    def prev_is_norm(self) -> bool:
        return self.prev.endswith("norm")


ATTN_IN = ScaleGroup("attn_in", "input_norm", ("attn.q", "attn.k", "attn.v"))
O_IN = ScaleGroup("o_in", "attn.v", ("attn.o",))
MLP_IN = ScaleGroup("mlp_in", "post_attn_norm", ("mlp.gate", "mlp.up"))
DOWN_IN = ScaleGroup("down_in", "mlp.up", ("mlp.down",))

# The input each linear reads, by group name.
INPUT_OF = {linear: g.name for g in (ATTN_IN, O_IN, MLP_IN, DOWN_IN) for linear in g.linears}


def scale_groups(config: ModelConfig) -> list[ScaleGroup]:
    """The groups of a layer, in the order their inputs are computed."""
    groups = [ATTN_IN]
    if config.num_kv_heads == config.num_heads:
        groups.append(O_IN)
    return [*groups, MLP_IN, DOWN_IN]


def fold_scales(layer: LayerWeights, group: ScaleGroup, scales: torch.Tensor) -> None:
    """Divide the group's input by ``scales`` where it is produced and multiply the group's
    weight columns by them, in place; the layer computes the same function afterwards."""
    if group.prev_is_norm:
        layer[group.prev] = layer[group.prev] / scales.to(layer[group.prev].dtype)
    else:
        weight = layer[f"{group.prev}.weight"]
        layer[f"{group.prev}.weight"] = weight / scales.to(weight.dtype)[:, None]
        bias = layer.get(f"{group.prev}.bias")
        if bias is not None:
            layer[f"{group.prev}.bias"] = bias / scales.to(bias.dtype)
    for name in group.linears:
        weight = layer[f"{name}.weight"]
        layer[f"{name}.weight"] = weight * scales.to(weight.dtype)[None, :]


def group_input(
    config: ModelConfig, layer: LayerWeights, group: str, h: torch.Tensor, rotary: Rotary
) -> torch.Tensor:
    """The input of the group's linears for the layer input ``h``, with the float weights."""
    proj = dense_projector(layer)
    x = rms_norm(h, layer["input_norm"], config.norm_eps)
    if group == "attn_in":
        return x
    if group == "o_in":
        return attention_heads(config, x, rotary, proj)
    x = rms_norm(h + attention(config, x, rotary, proj), layer["post_attn_norm"], config.norm_eps)
    return x if group == "mlp_in" else mlp_hidden(x, proj)


def group_output(
    config: ModelConfig, group: str, x: torch.Tensor, rotary: Rotary, proj: Projector
) -> torch.Tensor:
    """What a scale search compares for the group's input ``x``: the attention block's output,
    the MLP's output, or the single linear's output."""
    if group == "attn_in":
        return attention(config, x, rotary, proj)
    if group == "o_in":
        return proj("attn.o", x)
    if group == "mlp_in":
        return mlp(x, proj)
    return proj("mlp.down", x)
