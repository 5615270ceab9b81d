"""Gemma 2 and Gemma 3 (text): GeGLU MLPs, RMSNorm scaling by ``1 + w``, norms before and after
attention and the MLP, embeddings scaled by sqrt(hidden), sliding-window layers interleaved with
global ones, and the attention scale from ``query_pre_attn_scalar``."""

from __future__ import annotations

from typing import Any, ClassVar

from ...errors import ModelLoadError
from ..adapter import ModelAdapter, layer_types_from_hf
from ..config import FULL, SLIDING, ModelConfig, RopeConfig
from ..rope import rope_from_hf


def _pattern(hf: dict[str, Any], every: int) -> list[str]:
    """Every ``every``-th layer global, the others sliding (transformers' default)."""
    return [SLIDING if (i + 1) % every else FULL for i in range(int(hf["num_hidden_layers"]))]


def _cap(value: Any) -> float | None:
    return float(value) if value else None


class Gemma2Adapter(ModelAdapter):
    """``Gemma2ForCausalLM``: also soft-caps the attention scores and the final logits.

    HF's ``post_attention_layernorm`` is the norm on the attention output and
    ``pre_feedforward_layernorm`` the norm before the MLP (canonical ``post_attn_norm``).
    """

    layer_names: ClassVar[dict[str, str]] = {
        "input_layernorm.weight": "input_norm",
        "post_attention_layernorm.weight": "attn_output_norm",
        "pre_feedforward_layernorm.weight": "post_attn_norm",
        "post_feedforward_layernorm.weight": "mlp_output_norm",
    }
    tie_word_embeddings_default: ClassVar[bool] = True
    sliding_every: ClassVar[int] = 2

    def activation(self, hf: dict[str, Any]) -> str:
        # transformers runs Gemma's MLP on hidden_activation; hidden_act is a legacy field.
        return super().activation(
            {"hidden_act": hf.get("hidden_activation") or "gelu_pytorch_tanh"})

    def configure(self, config: ModelConfig, hf: dict[str, Any]) -> None:
        super().configure(config, hf)
        if hf.get("use_bidirectional_attention"):
            raise ModelLoadError(
                "Gemma models with use_bidirectional_attention=true are encoders; the engines "
                "run causal decoders only."
            )
        config.norm_offset = 1.0
        config.sandwich_norms = True
        config.embed_scale = config.hidden_size**0.5
        config.attn_scale = float(hf.get("query_pre_attn_scalar", 256)) ** -0.5
        config.final_logit_softcap = _cap(hf.get("final_logit_softcapping"))
        config.attn_logit_softcap = _cap(hf.get("attn_logit_softcapping"))
        window = hf.get("sliding_window")
        if window:
            every = int(hf.get("sliding_window_pattern") or self.sliding_every)
            config.sliding_window = int(window)
            config.layer_types = layer_types_from_hf(hf, _pattern(hf, every))


class Gemma3Adapter(Gemma2Adapter):
    """``Gemma3ForCausalLM``: Gemma 2's layout with RMSNorm on each query and key head, local
    and global rope bases (``rope_local_base_freq`` or per-layer-type ``rope_parameters``), one
    global layer in ``sliding_window_pattern`` (6), and no attention soft-capping (transformers
    never applies it to Gemma 3)."""

    layer_names: ClassVar[dict[str, str]] = {
        **Gemma2Adapter.layer_names,
        "self_attn.q_norm.weight": "attn.q_norm",
        "self_attn.k_norm.weight": "attn.k_norm",
    }
    sliding_every: ClassVar[int] = 6

    def configure(self, config: ModelConfig, hf: dict[str, Any]) -> None:
        super().configure(config, hf)
        config.qk_norm = True
        config.attn_logit_softcap = None
        params = hf.get("rope_parameters") or {}
        if FULL in params or SLIDING in params:  # transformers 5: one rope per layer type
            config.rope = rope_from_hf({**hf, "rope_scaling": None,
                                        "rope_parameters": params.get(FULL) or {}})
            config.local_rope = rope_from_hf({**hf, "rope_scaling": None,
                                              "rope_parameters": params.get(SLIDING) or {}})
        else:  # older configs: rope_theta and rope_scaling are global, the local base apart
            config.local_rope = RopeConfig(theta=float(hf.get("rope_local_base_freq", 10000.0)))
