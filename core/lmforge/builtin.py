"""lmforge's own built-in pieces, registered through the same hooks as external plugins."""

from __future__ import annotations

from .hookspecs import hookimpl

_ADAPTERS = {
    "LlamaForCausalLM": ("llama:LlamaAdapter", "Llama 2/3, Yi, SmolLM, CodeLlama, DeepSeek dense"),
    "MistralForCausalLM": ("mistral:MistralAdapter", "Mistral (sliding-window attention)"),
    "Qwen2ForCausalLM": ("qwen2:Qwen2Adapter", "Qwen2 and Qwen2.5 dense"),
    "InternLM2ForCausalLM": ("internlm2:InternLM2Adapter", "InternLM2 and InternLM2.5"),
    "Qwen3ForCausalLM": ("qwen3:Qwen3Adapter", "Qwen3 dense (query and key norms)"),
    "Qwen3MoeForCausalLM": ("qwen3_moe:Qwen3MoeAdapter", "Qwen3 mixture of experts"),
    "MixtralForCausalLM": ("mixtral:MixtralAdapter", "Mixtral mixture of experts"),
    "Gemma2ForCausalLM": ("gemma:Gemma2Adapter", "Gemma 2 (soft-capping, local and global layers)"),
    "Gemma3ForCausalLM": ("gemma:Gemma3Adapter", "Gemma 3 text (local and global rope)"),
    "Phi3ForCausalLM": ("phi3:Phi3Adapter", "Phi-3 and Phi-3.5 (fused projections, LongRoPE)"),
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
