"""Tiny quantized checkpoints written by hand, each with a transformers reference that holds the
same weights dequantized: AutoAWQ's GEMM layout, and W8A8 as compressed-tensors and LMDeploy's
``lite smooth_quant`` write it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from lmforge.model.linear import FP8_DTYPE, pack_awq
from safetensors.torch import save_file
from torch_runner_helpers import save_hf_model

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def _linears(model):
    for i, layer in enumerate(model.model.layers):
        for name in LINEARS:
            module = layer.get_submodule(name)
            yield f"model.layers.{i}.{name}", module


def _save(model, out: Path, replaced: dict[str, torch.Tensor], quantization_config: dict):
    """Write ``model``'s state with each quantized linear's ``weight`` replaced by its tensors."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()
             if not any(k == f"{m}.weight" for m in {n.rpartition(".")[0] for n in replaced})}
    state.update(replaced)
    for stale in out.glob("*.safetensors"):
        stale.unlink()
    save_file(state, str(out / "model.safetensors"))
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (out / "config.json").write_text(json.dumps(config))


def add_tiny_tokenizer(out: Path, vocab_size: int = 128) -> None:
    """A word-level tokenizer whose ``vocab_size`` tokens are ``t0``, ``t1``, ... (BOS 1, EOS 2),
    so the engine can run the tiny models end to end."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    rust = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    rust.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=rust, bos_token="t1", eos_token="t2",
                            unk_token="t0").save_pretrained(out)


def save_awq_model(out: Path, group_size: int = 32, seed: int = 0, kind: str = "llama"):
    """A tiny Llama (or another family of the same linears, ``kind``) in AutoAWQ's GEMM layout
    (asymmetric int4, fp16 scales); returns its transformers reference, whose linears hold the
    dequantized weights."""
    model = save_hf_model(kind, out, seed=seed)
    tensors = {}
    for name, module in _linears(model):
        w = module.weight.detach().t()  # [K, N]
        k, n = w.shape
        groups = w.reshape(k // group_size, group_size, n)
        low, high = groups.amin(1).clamp(max=0), groups.amax(1).clamp(min=0)
        scales = ((high - low) / 15).clamp(min=1e-6).half()  # [K/G, N]
        s = scales.float()
        zeros = torch.round(-low / s).clamp(0, 15)
        q = torch.clamp(torch.round(groups / s[:, None]) + zeros[:, None], 0, 15)
        deq = ((q - zeros[:, None]) * s[:, None]).reshape(k, n)
        with torch.no_grad():
            module.weight.copy_(deq.t())
        tensors[f"{name}.qweight"] = pack_awq(q.reshape(k, n).to(torch.int32))
        tensors[f"{name}.qzeros"] = pack_awq(zeros.to(torch.int32))
        tensors[f"{name}.scales"] = scales
    _save(model, out, tensors, {"quant_method": "awq", "bits": 4, "group_size": group_size,
                                "zero_point": True, "version": "gemm"})
    return model


def save_w8a8_model(out: Path, layout: str, dtype: torch.dtype = torch.int8, seed: int = 0):
    """A tiny Llama with 8-bit per-channel weights in ``layout`` (``compressed-tensors`` or
    ``lmdeploy``); returns its transformers reference with the weights dequantized (the
    activations, which the engine quantizes per token, stay exact there)."""
    model = save_hf_model("llama", out, seed=seed)
    top = 127.0 if dtype == torch.int8 else 448.0
    tensors = {}
    for name, module in _linears(model):
        w = module.weight.detach()
        scale = (w.abs().amax(1) / top).clamp(min=1e-8)  # [N]
        scaled = w / scale[:, None]
        q = torch.round(scaled).clamp(-128, 127).to(torch.int8) if dtype == torch.int8 else \
            scaled.to(FP8_DTYPE)
        with torch.no_grad():
            module.weight.copy_(q.float() * scale[:, None])
        tensors[f"{name}.weight"] = q
        key = "weight_scale" if layout == "compressed-tensors" else "scale"
        tensors[f"{name}.{key}"] = scale[:, None].float()
    if layout == "compressed-tensors":
        kind = "int" if dtype == torch.int8 else "float"
        config = {
            "quant_method": "compressed-tensors",
            "format": f"{kind}-quantized",
            "config_groups": {"group_0": {
                "targets": ["Linear"],
                "weights": {"num_bits": 8, "type": kind, "symmetric": True,
                            "strategy": "channel", "dynamic": False},
                "input_activations": {"num_bits": 8, "type": kind, "symmetric": True,
                                      "strategy": "token", "dynamic": True},
            }},
            "ignore": ["lm_head"],
        }
    else:
        config = {"quant_method": "smooth_quant",
                  "quant_dtype": "int8" if dtype == torch.int8 else "float8_e4m3fn"}
    _save(model, out, tensors, config)
    return model
