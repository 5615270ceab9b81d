"""Qwen3: the Llama layout with an RMSNorm on each query and key head before the rotary embedding,
and no q, k or v biases."""

from __future__ import annotations

from typing import Any, ClassVar

from ..adapter import ModelAdapter, layer_types_from_hf
from ..config import FULL, SLIDING, ModelConfig


def qwen_sliding_layers(hf: dict[str, Any]) -> tuple[int | None, tuple[str, ...]]:
    """The window and layer kinds of a Qwen config: with ``use_sliding_window``, the layers from
    ``max_window_layers`` on slide (transformers' rule); the released models ship with it off."""
    window = hf.get("sliding_window") if hf.get("use_sliding_window") else None
    if not window:
        return None, ()
    first = int(hf.get("max_window_layers", 0))
    default = [SLIDING if i >= first else FULL for i in range(int(hf["num_hidden_layers"]))]
    return int(window), layer_types_from_hf(hf, default)


class Qwen3Adapter(ModelAdapter):
    """``Qwen3ForCausalLM``."""

    layer_names: ClassVar[dict[str, str]] = {
        **ModelAdapter.layer_names,
        "self_attn.q_norm.weight": "attn.q_norm",
        "self_attn.k_norm.weight": "attn.k_norm",
    }

    def configure(self, config: ModelConfig, hf: dict[str, Any]) -> None:
        super().configure(config, hf)
        config.qk_norm = True
        config.sliding_window, config.layer_types = qwen_sliding_layers(hf)
