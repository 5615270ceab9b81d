"""Llama and the architectures that reuse its class (Llama 2/3, Yi, SmolLM, CodeLlama, DeepSeek dense)."""

from __future__ import annotations

from ..adapter import ModelAdapter


class LlamaAdapter(ModelAdapter):
    """``LlamaForCausalLM``: the canonical layout itself."""
