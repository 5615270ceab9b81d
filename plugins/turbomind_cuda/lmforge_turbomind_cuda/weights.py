"""The engine's weights on the GPU: mapped from a converted folder, or converted while loading
from an HF folder, a GGUF file or random (dummy) values."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from lmforge.errors import ModelLoadError
from lmforge.model.loader import ModelInfo

from .converted import FORMAT, check_record, iter_converted, read_record
from .layout import LAYER_NAMES, iter_layout


@dataclass
class EngineWeights:
    """Tensors in the layout of :mod:`.layout`; ``lm_head`` is the embedding when tied."""

    layers: list[dict[str, torch.Tensor]]
    top: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def lm_head(self) -> torch.Tensor:
        return self.top.get("lm_head", self.top["embed"])


def converted_dtype(info: ModelInfo) -> str | None:
    """The dtype a converted folder was written in (None for other checkpoints)."""
    return read_record(info.path).get("dtype") if info.format == FORMAT else None


def load_weights(info: ModelInfo, dtype: torch.dtype, device: torch.device) -> EngineWeights:
    weights = EngineWeights(layers=[{} for _ in range(info.config.num_layers)])
    if info.format == FORMAT:
        check_record(read_record(info.path), info.path, tp=1)
        stream = ((name, t.to(device=device, dtype=dtype)) for name, t in iter_converted(info.path))
    else:
        stream = ((name, shards[0]) for name, shards in iter_layout(info, dtype, 1, device))
    for name, tensor in stream:
        if name.startswith("layers."):
            _, index, key = name.split(".", 2)
            if key not in LAYER_NAMES or int(index) >= len(weights.layers):
                raise ModelLoadError(f"Weight {name!r} in {info.path} is not in the engine's layout.")
            weights.layers[int(index)][key] = tensor
        else:
            weights.top[name] = tensor
    required = {"input_norm", "qkv", "o", "post_norm", "gate_up", "down"}
    for i, layer in enumerate(weights.layers):
        if not required <= set(layer) or "embed" not in weights.top or "norm" not in weights.top:
            raise ModelLoadError(f"{info.path} lacks weights of layer {i} or the embedding; "
                                 "convert it again with `lmforge convert`.")
    return weights
