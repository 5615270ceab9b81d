"""Tiny random HF models of the architectures ``lmforge lite`` quantizes, saved as safetensors."""

from __future__ import annotations

from pathlib import Path

import torch

OUTLIER_CHANNELS = [3, 17, 40]
_COMMON = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
               bos_token_id=1, eos_token_id=2)


def save_tiny(out: Path, arch: str = "llama", tokenizer=None, outliers: float = 1.0, **overrides):
    """``(folder, transformers model)`` of a tiny random model: ``llama`` (grouped K/V heads),
    ``llama_mha`` (one K/V head per query head), ``qwen2`` (q/k/v biases) or ``mistral``
    (sliding window shorter than the test sequences). ``tokenizer`` is saved beside it;
    ``outliers`` multiplies a few channels of every norm, so that a few input channels of the
    linears carry much larger activations, as in trained models."""
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
                if "layers" in module_name:
                    param[OUTLIER_CHANNELS] *= outliers
    folder = out / arch
    model.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder, model


def dense_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """The float weights a quantized folder stands for, under HF names: AWQ tensors unpacked and
    dequantized, W8A8 weights times their scales."""
    from lmforge_quant_awq.int4 import AwqTensors
    from safetensors.torch import load_file

    raw = {}
    for shard in sorted(folder.glob("*.safetensors")):
        raw.update(load_file(shard))
    state = {}
    for name, tensor in raw.items():
        prefix, _, suffix = name.rpartition(".")
        if suffix == "qweight":
            awq = AwqTensors(tensor, raw[f"{prefix}.qzeros"], raw[f"{prefix}.scales"])
            state[f"{prefix}.weight"] = awq.dequantize()
        elif suffix == "scale":
            state[f"{prefix}.weight"] = raw[f"{prefix}.weight"].float() * tensor.float()
        elif suffix not in ("qzeros", "scales") and name not in state:
            state[name] = tensor.float()
    return state


def load_dense(folder: Path, reference) -> torch.nn.Module:
    """A transformers model of ``reference``'s class and config with ``folder``'s weights."""
    import copy

    model = copy.deepcopy(reference)
    missing, unexpected = model.load_state_dict(dense_state_dict(folder), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    if missing:
        model.tie_weights()
    return model.float().eval()


def quantize_activations(model: torch.nn.Module, fake_quantize) -> None:
    """Quantize every decoder linear's input per token, as a W8A8 engine does."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "layers" in name:
            module.register_forward_pre_hook(lambda _m, args: (fake_quantize(args[0]),))


def calibration_text(path: Path, words: int = 6000, seed: int = 0) -> Path:
    """English-looking text, reproducible."""
    import random

    rng = random.Random(seed)
    vocab = ("the quick brown fox jumps over lazy dog hello world stop here end of the story "
             "a king and his castle rain falls on the old city bread and wine").split()
    path.write_text(" ".join(rng.choice(vocab) for _ in range(words)))
    return path
