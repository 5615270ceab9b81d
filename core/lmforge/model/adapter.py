"""Architecture adapters: how one HF architecture maps onto the canonical decoder.

An adapter turns the HF ``config.json`` into a :class:`ModelConfig` and HF weight names into the
canonical ones every engine loads:

``embed``, ``norm``, ``lm_head``, ``layers.{i}.input_norm``, ``layers.{i}.post_attn_norm`` (the
norm before the MLP), ``layers.{i}.attn.{q,k,v,o}.PARAM`` and
``layers.{i}.mlp.{gate,up,down}.PARAM``, where PARAM is ``weight`` and ``bias`` for plain
linears, ``qweight``, ``qzeros`` and ``scales`` for AWQ, ``weight`` and ``weight_scale`` for W8A8
(:mod:`lmforge.model.linear`).

Families add, as their configs say: ``layers.{i}.attn.{q,k}_norm`` (per-head query and key
norms), ``layers.{i}.attn_output_norm`` and ``layers.{i}.mlp_output_norm`` (norms on the
attention and MLP outputs), and for a mixture of experts ``layers.{i}.mlp.router.weight`` and
``layers.{i}.mlp.experts.{e}.{gate,up,down}.PARAM``.

The base class covers the Llama layout; an architecture that differs overrides the name tables or
:meth:`ModelAdapter.map_weights`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from ..errors import ModelLoadError
from .config import FULL, SLIDING, ModelConfig
from .linear import OUT, tensor_slice
from .quant import QuantConfig
from .rope import rope_from_hf
from .weights import canonical_shapes

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_EXPERT = re.compile(r"^(\d+)\.(.+)\.(\w+)$")
# HF activation names -> the canonical ones (the gated MLP's activation).
_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh"}
# A linear module's checkpoint tensors -> canonical parameter names: dense (weight, bias), AWQ
# (qweight, qzeros, scales) and W8A8 (weight and its per-channel scale: LMDeploy calls it
# ``scale``, compressed-tensors ``weight_scale``); see lmforge.model.linear.
LINEAR_PARAMS = {
    "weight": "weight", "bias": "bias", "qweight": "qweight", "qzeros": "qzeros",
    "scales": "scales", "weight_scale": "weight_scale", "scale": "weight_scale",
}


def split_outputs(param: str, tensor: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """The parts of a fused linear's checkpoint tensor ``param`` (any weight kind) that hold
    consecutive runs of ``sizes`` output features: a fused qkv or gate-up projection cut into
    its canonical linears."""
    parts, start = [], 0
    for size in sizes:
        where = tensor_slice(param, OUT, start, start + size)
        if where is None:  # a tensor without an output axis is shared by the parts
            parts.append(tensor)
        else:
            axis, first, end = where
            parts.append(tensor.narrow(axis, first, end - first).contiguous())
        start += size
    return parts


def layer_types_from_hf(hf: dict[str, Any], default: list[str]) -> tuple[str, ...]:
    """Each layer's attention kind: the config's ``layer_types`` when it has them, else
    ``default`` (the family's pattern)."""
    types = tuple(hf.get("layer_types") or default)
    unknown = sorted(set(types) - {SLIDING, FULL})
    if unknown:
        raise ModelLoadError(
            f"Layer type {unknown[0]!r} in config.json is not supported; supported layer types: "
            f"{SLIDING}, {FULL}."
        )
    if len(types) != int(hf["num_hidden_layers"]):
        raise ModelLoadError(
            f"config.json lists {len(types)} layer_types for {hf['num_hidden_layers']} layers."
        )
    return types


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
    # A mixture of experts: the HF module holding the experts (``{prefix}.{e}.{module}``) and
    # each expert's linears -> canonical ``mlp.experts.{e}.{gate,up,down}``.
    experts_prefix: ClassVar[str] = ""
    expert_linears: ClassVar[dict[str, str]] = {}
    # Buffers some checkpoints carry that the engines recompute.
    ignored_suffixes: ClassVar[tuple[str, ...]] = ("rotary_emb.inv_freq",)
    # Whether the LM head is the embedding when config.json does not say.
    tie_word_embeddings_default: ClassVar[bool] = False

    def config_from_hf(self, hf: dict[str, Any], rope_scaling_factor: float = 0.0) -> ModelConfig:
        """The canonical config of an HF ``config.json`` dict."""
        try:
            num_heads = int(hf["num_attention_heads"])
            hidden = int(hf["hidden_size"])
            config = ModelConfig(
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
                tie_word_embeddings=bool(
                    hf.get("tie_word_embeddings", self.tie_word_embeddings_default)),
                hidden_act=self.activation(hf),
                sliding_window=self.sliding_window(hf),
                bos_token_id=hf.get("bos_token_id"),
                eos_token_ids=eos_ids(hf.get("eos_token_id")),
                torch_dtype=str(hf.get("torch_dtype") or hf.get("dtype") or "float16"),
                model_type=hf.get("model_type", ""),
            )
            self.configure(config, hf)
            return config
        except KeyError as exc:
            raise ModelLoadError(
                f"The model's config.json lacks the field {exc.args[0]!r}."
            ) from None

    def configure(self, config: ModelConfig, hf: dict[str, Any]) -> None:
        """Set the fields a family adds to the Llama layout (norms, windows, experts, ...) from
        the HF config; a field it lacks raises ``KeyError``, reported as a missing field."""

    def has_qkv_bias(self, hf: dict[str, Any]) -> bool:
        return bool(hf.get("attention_bias", False))

    def canonical_shapes(self, config: ModelConfig, quant: QuantConfig | None = None):
        """Every canonical weight the architecture has, with its shape and dtype
        (:func:`lmforge.model.weights.canonical_shapes`): what dummy weights are made of. An
        architecture whose layers hold other tensors (a model plugin's) overrides it."""
        return canonical_shapes(config, quant)

    def activation(self, hf: dict[str, Any]) -> str:
        """The gated MLP's activation, in canonical terms."""
        name = str(hf.get("hidden_act") or "silu")
        return _ACTIVATIONS.get(name, name)

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
            if self.experts_prefix and rest.startswith(self.experts_prefix + "."):
                expert = _EXPERT.match(rest[len(self.experts_prefix) + 1:])
                if expert and expert[2] in self.expert_linears and expert[3] in LINEAR_PARAMS:
                    e, module, param = expert.groups()
                    canonical = (f"layers.{layer}.mlp.experts.{e}.{self.expert_linears[module]}."
                                 f"{LINEAR_PARAMS[param]}")
                    return ((canonical, tensor),)
            module, _, param = rest.rpartition(".")
            if module in self.layer_linears and param in LINEAR_PARAMS:
                canonical = f"layers.{layer}.{self.layer_linears[module]}.{LINEAR_PARAMS[param]}"
                return ((canonical, tensor),)
        raise ModelLoadError(
            f"Checkpoint weight {name!r} is not part of the {type(self).__name__} layout; "
            "check that config.json names the right architecture."
        )
