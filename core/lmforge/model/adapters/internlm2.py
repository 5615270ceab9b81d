"""InternLM2: the Llama decoder under other names, with q, k and v fused and interleaved."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from ..adapter import LINEAR_PARAMS, ModelAdapter
from ..config import ModelConfig

_WQKV = re.compile(r"^model\.layers\.(\d+)\.attention\.wqkv\.(\w+)$")
# The output (head) dimension of each linear tensor kind (AWQ's are [in, out]).
_OUTPUT_AXIS = {"weight": 0, "bias": 0, "weight_scale": 0, "qweight": 1, "qzeros": 1, "scales": 1}


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
    }
    layer_linears: ClassVar[dict[str, str]] = {
        "attention.wo": "attn.o",
        "feed_forward.w1": "mlp.gate",
        "feed_forward.w3": "mlp.up",
        "feed_forward.w2": "mlp.down",
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
        layer, param = match.groups()
        param = LINEAR_PARAMS.get(param, param)
        if param not in _OUTPUT_AXIS:
            return super().map_weights(name, tensor)
        axis = _OUTPUT_AXIS[param]
        groups = self._num_heads // self._num_kv_heads
        out = tensor.movedim(axis, 0)
        grouped = out.reshape(self._num_kv_heads, groups + 2, -1, *out.shape[1:])
        rows = grouped.shape[2]  # one head's rows (head_dim, or head_dim / 8 packed by AWQ)
        parts = (
            grouped[:, :groups].reshape(self._num_heads * rows, *out.shape[1:]),
            grouped[:, groups].reshape(self._num_kv_heads * rows, *out.shape[1:]),
            grouped[:, groups + 1].reshape(self._num_kv_heads * rows, *out.shape[1:]),
        )
        prefix = f"layers.{layer}.attn"
        return tuple((f"{prefix}.{head}.{param}", part.movedim(0, axis).contiguous())
                     for head, part in zip("qkv", parts, strict=True))
