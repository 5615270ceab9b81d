"""Tiny random HF models of the architectures ``lmforge lite`` quantizes, saved as safetensors."""

from __future__ import annotations

from pathlib import Path

import torch

_COMMON = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
               bos_token_id=1, eos_token_id=2)


def save_tiny(out: Path, arch: str = "llama", **overrides):
    """``(folder, transformers model)`` of a tiny random model: ``llama`` (grouped K/V heads),
    ``llama_mha`` (one K/V head per query head), ``qwen2`` (q/k/v biases) or ``mistral``
    (sliding window shorter than the test sequences)."""
    import transformers

    kwargs = dict(_COMMON)
    if arch == "llama_mha":
        kwargs["num_key_value_heads"] = 4
    if arch == "mistral":
        kwargs["sliding_window"] = 8
    kwargs.update(overrides)
    name = {"llama": "Llama", "llama_mha": "Llama", "qwen2": "Qwen2", "mistral": "Mistral"}[arch]
    config = getattr(transformers, f"{name}Config")(**kwargs)
    if arch == "mistral":
        config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = getattr(transformers, f"{name}ForCausalLM")(config).eval()
    # Random init leaves norms at 1; give them some spread, as trained models have.
    with torch.no_grad():
        for module_name, param in model.named_parameters():
            if "norm" in module_name:
                param.uniform_(0.5, 1.5)
    folder = out / arch
    model.save_pretrained(folder)
    return folder, model
