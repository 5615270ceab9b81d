"""The rotary embedding's cos/sin tables for one step: dynamic NTK and LongRoPE included."""

from __future__ import annotations

import torch
from lmforge.model.config import RopeConfig
from lmforge.model.rope import rope_attention_factor, rope_inv_freq

from .inputs import StepInputs
from .ops import Ops


class RotaryEmbedding:
    """Cos/sin per token. With dynamic NTK, a sequence longer than the original context uses
    frequencies stretched for its current length (transformers' semantics), so those rows are
    recomputed per sequence on the host. With LongRoPE, the tokens of a sequence longer than the
    original context use the long factors, the others the short ones (transformers picks by the
    sequence's length too); both tables are made and one is picked per token on the device, so
    a decode step stays capturable in a CUDA graph. Keys cached before a sequence crossed the
    original context keep their short-factor rotation (transformers' ``generate`` re-encodes the
    whole sequence there; an engine would pay a new prefill), and so does the first chunk of a
    prompt prefilled in chunks that straddle it. Other scalings fold into one ``inv_freq``."""

    def __init__(self, rope: RopeConfig, head_dim: int, device: torch.device, ops: Ops) -> None:
        self.rope = rope
        self.head_dim = head_dim
        self.ops = ops
        self.inv_freq = rope_inv_freq(rope, head_dim).to(device)
        self.dynamic = rope.scaling_type == "dynamic"
        self.attention_factor = rope_attention_factor(rope)
        self.long_inv_freq = None
        if rope.scaling_type == "longrope":
            self.original = rope.extra["original_max_position_embeddings"]
            self.long_inv_freq = rope_inv_freq(rope, head_dim, self.original + 1).to(device)

    def cos_sin(self, inputs: StepInputs) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.ops.rope_cos_sin(inputs.positions, self.inv_freq)
        if self.long_inv_freq is not None:
            cos, sin = self._longrope(inputs, cos, sin)
        if self.attention_factor != 1.0:
            cos, sin = cos * self.attention_factor, sin * self.attention_factor
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

    def _longrope(self, inputs: StepInputs, cos: torch.Tensor,
                  sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        long_cos, long_sin = self.ops.rope_cos_sin(inputs.positions, self.long_inv_freq)
        if inputs.is_decode:  # one token per sequence
            lengths = inputs.kv_lens
        else:
            q_lens = inputs.cu_q_lens[1:] - inputs.cu_q_lens[:-1]
            lengths = torch.repeat_interleave(inputs.kv_lens, q_lens,
                                              output_size=inputs.positions.shape[0])
        long = (lengths > self.original)[:, None]
        return torch.where(long, long_cos, cos), torch.where(long, long_sin, sin)
