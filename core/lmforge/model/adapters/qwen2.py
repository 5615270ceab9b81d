"""Qwen2: the Llama layout with biases on q, k and v."""

from __future__ import annotations

from typing import Any

from ...errors import ModelLoadError
from ..adapter import ModelAdapter
from ..config import ModelConfig


class Qwen2Adapter(ModelAdapter):
    """``Qwen2ForCausalLM``: q, k and v carry biases, o does not."""

    def config_from_hf(self, hf: dict[str, Any], rope_scaling_factor: float = 0.0) -> ModelConfig:
        config = super().config_from_hf(hf, rope_scaling_factor)
        config.o_bias = False
        return config

    def has_qkv_bias(self, hf: dict[str, Any]) -> bool:
        return True

    def sliding_window(self, hf: dict[str, Any]) -> int | None:
        # Qwen2's window applies to a subset of layers only; the released models ship with it off.
        if hf.get("use_sliding_window"):
            raise ModelLoadError(
                "Qwen2 models with use_sliding_window=true are not supported; set it to false in "
                "config.json."
            )
        return None
