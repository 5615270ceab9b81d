"""Phi-3: the Llama layout with q, k and v fused in ``qkv_proj`` and gate and up in
``gate_up_proj``, and LongRoPE scaling in the long-context models."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch

from ...errors import ModelLoadError
from ..adapter import LINEAR_PARAMS, ModelAdapter, split_outputs
from ..config import ModelConfig

_FUSED = re.compile(r"^model\.layers\.(\d+)\.(self_attn\.qkv_proj|mlp\.gate_up_proj)\.(\w+)$")


class Phi3Adapter(ModelAdapter):
    """``Phi3ForCausalLM``: the fused checkpoint tensors are cut into canonical q, k, v, gate and
    up along their output features (any weight kind), using the shapes that
    :meth:`config_from_hf` read (the loader always calls it first). ``sliding_window`` applies
    to every layer, as transformers applies it."""

    def __init__(self) -> None:
        self._qkv_sizes: list[int] = []
        self._gate_up_sizes: list[int] = []

    def configure(self, config: ModelConfig, hf: dict[str, Any]) -> None:
        partial = float((hf.get("rope_parameters") or {}).get(
            "partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)))
        if partial != 1.0:
            raise ModelLoadError(
                f"Rotary embeddings over part of each head (partial_rotary_factor {partial}) are "
                "not supported; only Phi-3 models that rotate whole heads run."
            )
        window = hf.get("sliding_window")
        config.sliding_window = int(window) if window else None
        self._qkv_sizes = [config.q_size, config.kv_size, config.kv_size]
        self._gate_up_sizes = [config.intermediate_size] * 2

    def map_weights(self, name: str, tensor: torch.Tensor) -> Iterable[tuple[str, torch.Tensor]]:
        match = _FUSED.match(name)
        if match is None or match[3] not in LINEAR_PARAMS:
            return super().map_weights(name, tensor)
        layer, module, param = match[1], match[2], LINEAR_PARAMS[match[3]]
        if module == "self_attn.qkv_proj":
            names, sizes = ("attn.q", "attn.k", "attn.v"), self._qkv_sizes
        else:
            names, sizes = ("mlp.gate", "mlp.up"), self._gate_up_sizes
        parts = split_outputs(param, tensor, sizes)
        return tuple((f"layers.{layer}.{n}.{param}", part)
                     for n, part in zip(names, parts, strict=True))
