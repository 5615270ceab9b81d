"""The rotary embedding's cos/sin tables for one step, dynamic NTK scaling included."""

from __future__ import annotations

import torch
from lmforge.model.config import RopeConfig
from lmforge.model.rope import rope_inv_freq

from .inputs import StepInputs
from .ops import Ops


class RotaryEmbedding:
    """Cos/sin per token. With dynamic NTK, a sequence longer than the original context uses
    frequencies stretched for its current length (transformers' semantics), so those rows are
    recomputed per sequence; other scalings fold into one fixed ``inv_freq``."""

    def __init__(self, rope: RopeConfig, head_dim: int, device: torch.device, ops: Ops) -> None:
        self.rope = rope
        self.head_dim = head_dim
        self.ops = ops
        self.inv_freq = rope_inv_freq(rope, head_dim).to(device)
        self.dynamic = rope.scaling_type == "dynamic"

    def cos_sin(self, inputs: StepInputs) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.ops.rope_cos_sin(inputs.positions, self.inv_freq)
        if not self.dynamic:
            return cos, sin
        original = self.rope.extra["original_max_position_embeddings"]
        start = 0
        for q_len, kv_len in zip(inputs.q_lens_host, inputs.kv_lens_host, strict=True):
            if kv_len > original:
                rows = slice(start, start + q_len)
                inv_freq = rope_inv_freq(self.rope, self.head_dim, kv_len).to(self.inv_freq.device)
                cos[rows], sin[rows] = self.ops.rope_cos_sin(inputs.positions[rows], inv_freq)
            start += q_len
        return cos, sin
