"""lmforge's own built-in pieces, registered through the same hooks as external plugins."""

from __future__ import annotations

from .hookspecs import hookimpl

_ADAPTERS = {
    "LlamaForCausalLM": ("llama:LlamaAdapter", "Llama 2/3, Yi, SmolLM, CodeLlama, DeepSeek dense"),
    "MistralForCausalLM": ("mistral:MistralAdapter", "Mistral (sliding-window attention)"),
    "Qwen2ForCausalLM": ("qwen2:Qwen2Adapter", "Qwen2 and Qwen2.5 dense"),
    "InternLM2ForCausalLM": ("internlm2:InternLM2Adapter", "InternLM2 and InternLM2.5"),
}


@hookimpl
def register_models(register):
    from .registry import ModelSpec

    for architecture, (ref, description) in _ADAPTERS.items():
        register(
            ModelSpec(
                architecture=architecture,
                adapter=f"lmforge.model.adapters.{ref}",
                description=description,
                plugin="builtin",
            )
        )
