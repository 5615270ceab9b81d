"""A model's weights in host memory, grouped by layer, read once from lmforge's canonical stream."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import ModelLoadError
from ..model.loader import ModelInfo
from .decoder import LINEARS, LayerWeights

_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")


@dataclass
class HostModel:
    """``globals`` holds ``embed``, ``norm`` and ``lm_head`` (when not tied); ``layers[i]`` a
    layer's tensors by name without the ``layers.{i}.`` prefix. Tensors keep their stored dtype
    (GGUF: float32) and stay on the CPU; a quantizer releases each layer once written."""

    info: ModelInfo
    globals: dict[str, torch.Tensor]
    layers: list[LayerWeights | None]

    @classmethod
    def load(cls, info: ModelInfo, on_tensor: Callable[[str], None] | None = None) -> HostModel:
        """Read every weight of ``info``; ``on_tensor(name)`` is called after each one."""
        config = info.config
        globals_: dict[str, torch.Tensor] = {}
        layers: list[LayerWeights] = [{} for _ in range(config.num_layers)]
        for name, tensor in info.iter_weights():
            match = _LAYER.match(name)
            if match:
                layers[int(match.group(1))][match.group(2)] = tensor
            else:
                globals_[name] = tensor
            if on_tensor is not None:
                on_tensor(name)
        needed = ["input_norm", "post_attn_norm", *(f"{n}.weight" for n in LINEARS)]
        for i, layer in enumerate(layers):
            missing = [n for n in needed if n not in layer]
            if missing:
                raise ModelLoadError(
                    f"{info.path} has no weight layers.{i}.{missing[0]}; check that the "
                    "checkpoint is complete."
                )
        if "embed" not in globals_:
            raise ModelLoadError(f"{info.path} has no embedding weight; check the checkpoint.")
        return cls(info, globals_, list(layers))

    def layer(self, index: int, device: torch.device, dtype: torch.dtype) -> LayerWeights:
        """A copy of layer ``index`` on ``device`` in ``dtype`` (the host copy stays)."""
        layer = self.layers[index]
        if layer is None:
            raise RuntimeError(f"layer {index} was already released")
        return {name: t.to(device=device, dtype=dtype) for name, t in layer.items()}

    def release(self, index: int) -> None:
        """Drop layer ``index`` from host memory."""
        self.layers[index] = None
