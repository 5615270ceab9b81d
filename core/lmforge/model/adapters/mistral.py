"""Mistral: the Llama layout with sliding-window attention."""

from __future__ import annotations

from typing import Any

from ..adapter import ModelAdapter


class MistralAdapter(ModelAdapter):
    """``MistralForCausalLM``; ``sliding_window`` null (Mistral v0.2+) means full attention."""

    def sliding_window(self, hf: dict[str, Any]) -> int | None:
        window = hf.get("sliding_window")
        return int(window) if window else None
