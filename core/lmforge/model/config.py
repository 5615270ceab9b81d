"""The canonical decoder configuration every engine reads, whatever the HF architecture.

Families differ in facts that are data here, not code: per-layer attention (sliding-window layers
interleaved with global ones, each kind with its own rope), norms on the queries and keys, norms
after the attention and MLP outputs, scaled embeddings, soft-capped logits, and mixture-of-experts
MLPs. An engine reads these fields; an adapter fills them from the HF ``config.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The values of ModelConfig.layer_types (transformers' own names).
SLIDING = "sliding_attention"
FULL = "full_attention"


@dataclass
class RopeConfig:
    """Rotary embedding parameters.

    ``scaling_type`` is one of ``None`` (plain), ``"linear"``, ``"dynamic"`` (dynamic NTK),
    ``"llama3"`` or ``"longrope"`` (Phi-3's short and long factors); ``extra`` keeps the type's
    own fields (llama3's ``low_freq_factor``, ``high_freq_factor``,
    ``original_max_position_embeddings``; longrope's ``short_factor``, ``long_factor``,
    ``original_max_position_embeddings`` and ``attention_factor``, ...).
    """

    theta: float = 10000.0
    scaling_type: str | None = None
    factor: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class MoEConfig:
    """A mixture-of-experts MLP: each token's router picks ``top_k`` of ``num_experts`` gated
    MLPs of ``intermediate_size`` and sums their outputs weighted by the softmax of the router's
    logits, renormalized over the chosen experts when ``renormalize`` (Mixtral always; Qwen3-MoE
    when ``norm_topk_prob``). Layers listed in ``dense_layers`` have a plain MLP of the model's
    ``intermediate_size`` instead."""

    num_experts: int
    top_k: int
    intermediate_size: int
    renormalize: bool = True
    dense_layers: tuple[int, ...] = ()

    @property
    def expert_parameters(self) -> int:
        """Weights of one expert per unit of hidden size (gate, up and down)."""
        return 3 * self.intermediate_size


@dataclass
class ModelConfig:
    """Shape and numerics of a decoder-only transformer, in the engine's own terms."""

    architecture: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int = 4096
    norm_eps: float = 1e-6
    rope: RopeConfig = field(default_factory=RopeConfig)
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    # The gated MLP's activation: "silu" (SwiGLU) or "gelu_tanh" (GeGLU with tanh GELU).
    hidden_act: str = "silu"
    # The window of sliding-window layers: every layer when ``layer_types`` is empty, else the
    # layers marked SLIDING there (the others attend to the whole sequence).
    sliding_window: int | None = None
    layer_types: tuple[str, ...] = ()
    # The rope of sliding-window layers where it differs from ``rope`` (Gemma 3's local base).
    local_rope: RopeConfig | None = None
    # RMSNorm of each query and key head before the rotary embedding (Qwen3, Gemma 3).
    qk_norm: bool = False
    # RMSNorm scales by ``norm_offset + weight`` in float32 when non-zero (Gemma's ``1 + w``).
    norm_offset: float = 0.0
    # Norms on the attention and MLP outputs before their residual sums (Gemma 2/3).
    sandwich_norms: bool = False
    # The embedding output is multiplied by this (Gemma: sqrt(hidden_size)).
    embed_scale: float = 1.0
    # Attention scores times the scale, and the final logits, go through cap * tanh(x / cap).
    attn_logit_softcap: float | None = None
    final_logit_softcap: float | None = None
    # Attention scores are scaled by this; None means head_dim ** -0.5.
    attn_scale: float | None = None
    use_logn_attn: bool = False
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    torch_dtype: str = "float16"
    moe: MoEConfig | None = None
    model_type: str = ""

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def softmax_scale(self) -> float:
        """What attention scores are multiplied by before the softmax."""
        return self.attn_scale if self.attn_scale is not None else self.head_dim**-0.5

    def layer_window(self, layer: int) -> int | None:
        """The sliding window of ``layer``, or None where it attends to every position."""
        if self.layer_types and self.layer_types[layer] != SLIDING:
            return None
        return self.sliding_window

    def layer_rope(self, layer: int) -> RopeConfig:
        """The rotary embedding of ``layer``."""
        if self.local_rope is not None and self.layer_window(layer) is not None:
            return self.local_rope
        return self.rope

    def is_moe_layer(self, layer: int) -> bool:
        """Whether ``layer``'s MLP is a mixture of experts."""
        return self.moe is not None and layer not in self.moe.dense_layers

    def kv_cache_bytes_per_token(self, dtype_bytes: int) -> int:
        """K and V of one token across all layers."""
        return 2 * self.num_layers * self.kv_size * dtype_bytes

    def _layer_parameters(self, experts: int | None) -> int:
        """Weights of all layers, counting ``experts`` experts per MoE layer (None: all)."""
        h = self.hidden_size
        attention = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        if self.qkv_bias:
            attention += self.q_size + 2 * self.kv_size
        norms = (4 if self.sandwich_norms else 2) * h + (2 * self.head_dim if self.qk_norm else 0)
        total = 0
        for layer in range(self.num_layers):
            if self.is_moe_layer(layer):
                moe = self.moe
                count = moe.num_experts if experts is None else min(experts, moe.num_experts)
                mlp = count * moe.expert_parameters * h + moe.num_experts * h  # experts + router
            else:
                mlp = 3 * h * self.intermediate_size
            total += attention + mlp + norms
        return total

    @property
    def num_parameters(self) -> int:
        """Weights of the decoder, biases and norms included: what an engine holds once loaded,
        before any quantization."""
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self._layer_parameters(None) + embeddings + self.hidden_size

    @property
    def decode_parameters(self) -> int:
        """Weights one decode step of one token reads: every layer with only its ``top_k``
        experts, the final norm and the LM head (the embedding table is only indexed)."""
        top_k = self.moe.top_k if self.moe is not None else None
        return (self._layer_parameters(top_k) + self.vocab_size * self.hidden_size
                + self.hidden_size)
