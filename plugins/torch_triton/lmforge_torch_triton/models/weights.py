"""The decoder's weights in the engine's layout, built from the canonical weight stream.

q, k and v fuse into one ``qkv`` matrix and gate and up into one ``gate_up`` matrix, so a layer
runs two matmuls where the checkpoint has five. A layer is fused as soon as its last part
arrives, so at most one layer's parts are held twice. (Tensor parallelism would slice heads and
MLP rows here, per rank, before fusing.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lmforge.errors import ModelLoadError
from lmforge.model.config import ModelConfig
from lmforge.model.loader import ModelInfo


@dataclass
class LayerWeights:
    input_norm: torch.Tensor  # [H]
    post_attn_norm: torch.Tensor  # [H]
    qkv: torch.Tensor  # [q_size + 2 * kv_size, H]
    qkv_bias: torch.Tensor | None
    o: torch.Tensor  # [H, q_size]
    o_bias: torch.Tensor | None
    gate_up: torch.Tensor  # [2 * I, H]
    down: torch.Tensor  # [H, I]


@dataclass
class DecoderWeights:
    embed: torch.Tensor  # [V, H]
    norm: torch.Tensor  # [H]
    lm_head: torch.Tensor  # [V, H]; the embedding itself when tied
    layers: list[LayerWeights]


def _layer_parts(config: ModelConfig) -> set[str]:
    parts = {"input_norm", "post_attn_norm", "attn.o.weight"}
    parts |= {f"attn.{p}.weight" for p in "qkv"} | {
        f"mlp.{p}.weight" for p in ("gate", "up", "down")
    }
    if config.qkv_bias:
        parts |= {f"attn.{p}.bias" for p in "qkv"}
    if config.o_bias:
        parts.add("attn.o.bias")
    return parts


def _fuse(parts: dict[str, torch.Tensor], config: ModelConfig) -> LayerWeights:
    qkv_bias = None
    if config.qkv_bias:
        qkv_bias = torch.cat([parts.pop(f"attn.{p}.bias") for p in "qkv"])
    return LayerWeights(
        input_norm=parts.pop("input_norm"),
        post_attn_norm=parts.pop("post_attn_norm"),
        qkv=torch.cat([parts.pop(f"attn.{p}.weight") for p in "qkv"]),
        qkv_bias=qkv_bias,
        o=parts.pop("attn.o.weight"),
        o_bias=parts.pop("attn.o.bias", None),
        gate_up=torch.cat([parts.pop("mlp.gate.weight"), parts.pop("mlp.up.weight")]),
        down=parts.pop("mlp.down.weight"),
    )


def load_decoder_weights(
    model_info: ModelInfo, dtype: torch.dtype, device: torch.device
) -> DecoderWeights:
    """Stream ``model_info``'s canonical weights onto ``device`` in ``dtype`` and fuse them."""
    config = model_info.config
    needed = _layer_parts(config)
    pending: dict[int, dict[str, torch.Tensor]] = {}
    layers: list[LayerWeights | None] = [None] * config.num_layers
    top: dict[str, torch.Tensor] = {}
    for name, tensor in model_info.iter_weights(device=device):
        tensor = tensor.to(device=device, dtype=dtype)
        if not name.startswith("layers."):
            top[name] = tensor
            continue
        _, index, part = name.split(".", 2)
        i = int(index)
        if i >= config.num_layers or part not in needed:
            raise ModelLoadError(f"Weight {name!r} does not fit the model's configuration.")
        parts = pending.setdefault(i, {})
        parts[part] = tensor
        if len(parts) == len(needed):
            layers[i] = _fuse(pending.pop(i), config)
    missing = sorted(f"layers.{i}.{p}" for i, parts in pending.items() for p in needed - set(parts))
    missing += [
        f"layers.{i}" for i, layer in enumerate(layers) if layer is None and i not in pending
    ]
    missing += [n for n in ("embed", "norm") if n not in top]
    if "lm_head" not in top and not config.tie_word_embeddings:
        missing.append("lm_head")
    if missing:
        raise ModelLoadError(
            f"The checkpoint at {model_info.path} lacks {len(missing)} weights, e.g. {missing[0]!r}."
        )
    return DecoderWeights(
        embed=top["embed"],
        norm=top["norm"],
        lm_head=top.get("lm_head", top["embed"]),
        layers=layers,  # type: ignore[arg-type]  # every entry was checked above
    )
