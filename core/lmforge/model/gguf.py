"""GGUF files (llama.cpp): the HF-style config from their metadata and canonical weights."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import torch

from ..errors import ModelLoadError
from .gguf_file import GGUFFile

# llama.cpp architecture name -> HF architecture name.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}

# Metadata key (after "<arch>.") -> HF config field.
_METADATA = {
    "block_count": "num_hidden_layers",
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "rope.dimension_count": "head_dim",
    "vocab_size": "vocab_size",
}

_GLOBAL_NAMES = {
    "token_embd.weight": "embed",
    "output_norm.weight": "norm",
    "output.weight": "lm_head",
}
_LAYER_NAMES = {
    "attn_norm.weight": "input_norm",
    "ffn_norm.weight": "post_attn_norm",
    "attn_q.weight": "attn.q.weight",
    "attn_k.weight": "attn.k.weight",
    "attn_v.weight": "attn.v.weight",
    "attn_output.weight": "attn.o.weight",
    "attn_q.bias": "attn.q.bias",
    "attn_k.bias": "attn.k.bias",
    "attn_v.bias": "attn.v.bias",
    "ffn_gate.weight": "mlp.gate.weight",
    "ffn_up.weight": "mlp.up.weight",
    "ffn_down.weight": "mlp.down.weight",
}
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def gguf_hf_config(gguf: GGUFFile) -> dict[str, Any]:
    """An HF ``config.json``-style dict built from a GGUF file's metadata."""
    arch = gguf.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelLoadError(
            f"GGUF architecture {arch!r} in {gguf.path.name} is not supported; supported GGUF "
            f"architectures: {', '.join(ARCHITECTURES)}."
        )
    hf: dict[str, Any] = {"architectures": [ARCHITECTURES[arch]], "model_type": arch}
    for key, field in _METADATA.items():
        value = gguf.get(f"{arch}.{key}")
        if value is not None:
            hf[field] = value
    if "vocab_size" not in hf:
        hf["vocab_size"] = len(gguf.get("tokenizer.ggml.tokens", ()))
    names = {t.name for t in gguf.tensors}
    hf["tie_word_embeddings"] = "output.weight" not in names
    hf["attention_bias"] = "blk.0.attn_q.bias" in names
    for key in ("bos_token_id", "eos_token_id"):
        value = gguf.get(f"tokenizer.ggml.{key}")
        if value is not None:
            hf[key] = int(value)
    # GGUF weights are dequantized to float32; run them in half precision on a GPU.
    hf["torch_dtype"] = "float16"
    return hf


def _unpermute(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    # llama.cpp stores each Q/K head with its rotary pairs interleaved (GPT-J layout); put the
    # halves back as HF's rotate_half layout expects.
    half = weight.shape[0] // num_heads // 2
    return (
        weight.reshape(num_heads, half, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)
    )


def iter_gguf(gguf: GGUFFile, hf: dict[str, Any]) -> Iterator[tuple[str, torch.Tensor]]:
    """Canonical weights of a GGUF file, dequantized to float32 one tensor at a time."""
    permute = hf.get("model_type") == "llama"
    num_heads = int(hf["num_attention_heads"])
    num_kv_heads = int(hf.get("num_key_value_heads") or num_heads)
    try:
        for tensor in gguf.tensors:
            name = _canonical_name(tensor.name, gguf)
            weight = torch.from_numpy(gguf.dequantize(tensor))
            if permute and name.endswith("attn.q.weight"):
                weight = _unpermute(weight, num_heads)
            elif permute and name.endswith("attn.k.weight"):
                weight = _unpermute(weight, num_kv_heads)
            yield name, weight
    finally:
        gguf.release()  # the file's pages need not stay in memory once the weights are read


def _canonical_name(gguf_name: str, gguf: GGUFFile) -> str:
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _BLOCK.match(gguf_name)
    if match is None or match.group(2) not in _LAYER_NAMES:
        raise ModelLoadError(f"GGUF tensor {gguf_name!r} in {gguf.path.name} is not supported.")
    return f"layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
