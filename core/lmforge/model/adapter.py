"""Architecture adapters: how one HF architecture maps onto the canonical decoder.

An adapter turns the HF ``config.json`` into a :class:`ModelConfig` and HF weight names into the
canonical ones every engine loads:

``embed``, ``norm``, ``lm_head``, ``layers.{i}.input_norm``, ``layers.{i}.post_attn_norm``,
``layers.{i}.attn.{q,k,v,o}.PARAM`` and ``layers.{i}.mlp.{gate,up,down}.PARAM``, where PARAM
is ``weight`` and ``bias`` for plain linears, ``qweight``, ``qzeros`` and ``scales`` for AWQ,
``weight`` and ``weight_scale`` for W8A8 (:mod:`lmforge.model.linear`).

The base class covers the Llama layout; an architecture that differs overrides the name table or
:meth:`ModelAdapter.map_weights`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from ..errors import ModelLoadError
from .config import ModelConfig
from .rope import rope_from_hf

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# A linear module's checkpoint tensors -> canonical parameter names: dense (weight, bias), AWQ
# (qweight, qzeros, scales) and W8A8 (weight and its per-channel scale: LMDeploy calls it
# ``scale``, compressed-tensors ``weight_scale``); see lmforge.model.linear.
LINEAR_PARAMS = {
    "weight": "weight", "bias": "bias", "qweight": "qweight", "qzeros": "qzeros",
    "scales": "scales", "weight_scale": "weight_scale", "scale": "weight_scale",
}


def eos_ids(value: Any) -> list[int]:
    """``eos_token_id`` of an HF config, which may be absent, one id or a list."""
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


class ModelAdapter:
    """Maps one HF architecture (Llama layout by default) onto the canonical decoder."""

    # Whole-model weights: HF name -> canonical name.
    global_names: ClassVar[dict[str, str]] = {
        "model.embed_tokens.weight": "embed",
        "model.norm.weight": "norm",
        "lm_head.weight": "lm_head",
    }
    # Per-layer weights: HF name after ``model.layers.{i}.`` -> canonical name after ``layers.{i}.``.
    layer_names: ClassVar[dict[str, str]] = {
        "input_layernorm.weight": "input_norm",
        "post_attention_layernorm.weight": "post_attn_norm",
    }
    # Per-layer linear modules: HF module -> canonical module. Each of their tensors keeps its
    # parameter name (see LINEAR_PARAMS), so quantized checkpoints map as plain ones do.
    layer_linears: ClassVar[dict[str, str]] = {
        "self_attn.q_proj": "attn.q",
        "self_attn.k_proj": "attn.k",
        "self_attn.v_proj": "attn.v",
        "self_attn.o_proj": "attn.o",
        "mlp.gate_proj": "mlp.gate",
        "mlp.up_proj": "mlp.up",
        "mlp.down_proj": "mlp.down",
    }
    # Buffers some checkpoints carry that the engines recompute.
    ignored_suffixes: ClassVar[tuple[str, ...]] = ("rotary_emb.inv_freq",)

    def config_from_hf(self, hf: dict[str, Any], rope_scaling_factor: float = 0.0) -> ModelConfig:
        """The canonical config of an HF ``config.json`` dict."""
        try:
            num_heads = int(hf["num_attention_heads"])
            hidden = int(hf["hidden_size"])
            return ModelConfig(
                architecture=hf["architectures"][0],
                num_layers=int(hf["num_hidden_layers"]),
                hidden_size=hidden,
                num_heads=num_heads,
                num_kv_heads=int(hf.get("num_key_value_heads") or num_heads),
                head_dim=int(hf.get("head_dim") or hidden // num_heads),
                intermediate_size=int(hf["intermediate_size"]),
                vocab_size=int(hf["vocab_size"]),
                max_position_embeddings=int(hf.get("max_position_embeddings", 4096)),
                norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                rope=rope_from_hf(hf, rope_scaling_factor),
                qkv_bias=self.has_qkv_bias(hf),
                o_bias=bool(hf.get("attention_bias", False)),
                mlp_bias=bool(hf.get("mlp_bias", False)),
                tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
                hidden_act=hf.get("hidden_act", "silu"),
                sliding_window=self.sliding_window(hf),
                bos_token_id=hf.get("bos_token_id"),
                eos_token_ids=eos_ids(hf.get("eos_token_id")),
                torch_dtype=str(hf.get("torch_dtype") or hf.get("dtype") or "float16"),
                model_type=hf.get("model_type", ""),
            )
        except KeyError as exc:
            raise ModelLoadError(
                f"The model's config.json lacks the field {exc.args[0]!r}."
            ) from None

    def has_qkv_bias(self, hf: dict[str, Any]) -> bool:
        return bool(hf.get("attention_bias", False))

    def sliding_window(self, hf: dict[str, Any]) -> int | None:
        return None

    def map_weights(self, name: str, tensor: torch.Tensor) -> Iterable[tuple[str, torch.Tensor]]:
        """The canonical ``(name, tensor)`` pairs that one HF checkpoint tensor becomes."""
        if name.endswith(self.ignored_suffixes):
            return ()
        if name in self.global_names:
            return ((self.global_names[name], tensor),)
        match = _LAYER.match(name)
        if match:
            layer, rest = match.groups()
            if rest in self.layer_names:
                return ((f"layers.{layer}.{self.layer_names[rest]}", tensor),)
            module, _, param = rest.rpartition(".")
            if module in self.layer_linears and param in LINEAR_PARAMS:
                canonical = f"layers.{layer}.{self.layer_linears[module]}.{LINEAR_PARAMS[param]}"
                return ((canonical, tensor),)
        raise ModelLoadError(
            f"Checkpoint weight {name!r} is not part of the {type(self).__name__} layout; "
            "check that config.json names the right architecture."
        )
