"""InternLM2: the Llama decoder under other names, with q, k and v fused and interleaved."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from ..adapter import ModelAdapter
from ..config import ModelConfig

_WQKV = re.compile(r"^model\.layers\.(\d+)\.attention\.wqkv\.(weight|bias)$")


class InternLM2Adapter(ModelAdapter):
    """``InternLM2ForCausalLM``.

    ``attention.wqkv`` stacks, for each K/V head group, that group's query heads, then its key
    head, then its value head; the adapter splits it into canonical q, k and v, using the head
    layout that :meth:`config_from_hf` read (the loader always calls it first).
    """

    global_names: ClassVar[dict[str, str]] = {
        "model.tok_embeddings.weight": "embed",
        "model.norm.weight": "norm",
        "output.weight": "lm_head",
    }
    layer_names: ClassVar[dict[str, str]] = {
        "attention_norm.weight": "input_norm",
        "ffn_norm.weight": "post_attn_norm",
        "attention.wo.weight": "attn.o.weight",
        "attention.wo.bias": "attn.o.bias",
        "feed_forward.w1.weight": "mlp.gate.weight",
        "feed_forward.w3.weight": "mlp.up.weight",
        "feed_forward.w2.weight": "mlp.down.weight",
    }

    def __init__(self) -> None:
        self._num_heads = 0
        self._num_kv_heads = 0

    def config_from_hf(self, hf: dict[str, Any], rope_scaling_factor: float = 0.0) -> ModelConfig:
        config = super().config_from_hf(hf, rope_scaling_factor)
        config.o_bias = bool(hf.get("bias", False))
        # The split needs the head layout, which only the config knows.
        self._num_heads, self._num_kv_heads = config.num_heads, config.num_kv_heads
        return config

    def has_qkv_bias(self, hf: dict[str, Any]) -> bool:
        return bool(hf.get("bias", False))

    def map_weights(self, name: str, tensor: torch.Tensor) -> Iterable[tuple[str, torch.Tensor]]:
        match = _WQKV.match(name)
        if match is None:
            return super().map_weights(name, tensor)
        layer, kind = match.groups()
        groups = self._num_heads // self._num_kv_heads
        grouped = tensor.reshape(self._num_kv_heads, groups + 2, -1, *tensor.shape[1:])
        head_dim = grouped.shape[2]
        q = grouped[:, :groups].reshape(self._num_heads * head_dim, *tensor.shape[1:])
        k = grouped[:, groups].reshape(self._num_kv_heads * head_dim, *tensor.shape[1:])
        v = grouped[:, groups + 1].reshape(self._num_kv_heads * head_dim, *tensor.shape[1:])
        prefix = f"layers.{layer}.attn"
        return ((f"{prefix}.q.{kind}", q), (f"{prefix}.k.{kind}", k), (f"{prefix}.v.{kind}", v))
