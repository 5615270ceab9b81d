"""The canonical decoder configuration every engine reads, whatever the HF architecture."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RopeConfig:
    """Rotary embedding parameters.

    ``scaling_type`` is one of ``None`` (plain), ``"linear"``, ``"dynamic"`` (dynamic NTK),
    ``"llama3"`` or ``"yarn"``; ``extra`` keeps the type's own fields (llama3's
    ``low_freq_factor``, ``high_freq_factor``, ``original_max_position_embeddings``, ...).
    """

    theta: float = 10000.0
    scaling_type: str | None = None
    factor: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


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
    hidden_act: str = "silu"
    sliding_window: int | None = None
    use_logn_attn: bool = False
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    torch_dtype: str = "float16"
    # MoE fields, for adapters that need them (0 experts means a dense MLP).
    num_experts: int = 0
    num_experts_per_tok: int = 0
    model_type: str = ""

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    def kv_cache_bytes_per_token(self, dtype_bytes: int) -> int:
        """K and V of one token across all layers."""
        return 2 * self.num_layers * self.kv_size * dtype_bytes

    @property
    def num_parameters(self) -> int:
        """Weights of the dense (or MoE) decoder, biases and norms included: what an engine holds
        once loaded, before any quantization."""
        h, i = self.hidden_size, self.intermediate_size
        attention = h * (self.q_size + 2 * self.kv_size) + self.q_size * h
        if self.qkv_bias:
            attention += self.q_size + 2 * self.kv_size
        mlp = 3 * h * i * max(self.num_experts, 1) + (h * self.num_experts)
        embeddings = self.vocab_size * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * (attention + mlp + 2 * h) + embeddings + h
