"""Which slice of each weight one tensor-parallel rank holds (Megatron-style sharding).

- q, k, v, gate and up are column-parallel: a rank computes a contiguous block of their outputs
  (whole attention heads; where a model has fewer K/V heads than ranks, each K/V head is held by
  ``size / num_kv_heads`` ranks, the ones whose query heads read it).
- o and down are row-parallel: a rank multiplies its block of their inputs (its heads' outputs,
  its slice of the MLP) and the ranks' partial outputs are summed (an all-reduce).
- A mixture of experts splits every expert the same way (gate and up by columns, down by rows),
  so each rank holds a slice of every expert and one all-reduce sums the layer as for a dense
  MLP; the router is replicated.
- The embedding and the LM head are split by vocabulary rows, padded so every rank holds the
  same number; the embedding lookup is masked and summed, the LM head's logits gathered.
- Norms are replicated.

The engine's ``is_supported`` check asks :func:`unsupported_reason` before any weight loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from lmforge.model.config import ModelConfig
from lmforge.model.linear import IN, OUT, split_bounds, tensor_slice
from lmforge.model.weights import TensorPart

COLUMN_PARALLEL = ("attn.q", "attn.k", "attn.v", "mlp.gate", "mlp.up")
ROW_PARALLEL = ("attn.o", "mlp.down")
VOCAB_PARALLEL = ("embed", "lm_head")
AWQ_PACK = 8  # AWQ packs 8 output columns per int32
_EXPERT = re.compile(r"^mlp\.experts\.\d+\.")


def _role(module: str) -> str:
    """An expert's linear under its role for every expert: ``mlp.experts.gate``, ..."""
    return _EXPERT.sub("mlp.experts.", module)


def unsupported_reason(config: ModelConfig, size: int, awq_group_size: int | None = None) -> str:
    """Why ``config`` cannot be split over ``size`` ranks, or ``""`` when it can."""
    if size == 1:
        return ""
    heads, kv_heads = config.num_heads, config.num_kv_heads
    if heads % size:
        return f"tp={size} does not divide the model's {heads} attention heads"
    if kv_heads % size and size % kv_heads:
        return (f"tp={size} neither divides the model's {kv_heads} key/value heads nor is a "
                "multiple of them")
    if config.intermediate_size % size:
        return f"tp={size} does not divide the MLP's {config.intermediate_size} features"
    if config.moe is not None and config.moe.intermediate_size % size:
        return (f"tp={size} does not divide the experts' {config.moe.intermediate_size} "
                "features")
    if awq_group_size:
        for what, features in (("attention output", config.q_size),
                               ("MLP", config.intermediate_size)):
            part = features // size
            if part % awq_group_size or part % AWQ_PACK:
                return (f"with tp={size} each rank's {part} {what} features are not whole AWQ "
                        f"groups of {awq_group_size}")
    return ""


@dataclass(frozen=True)
class ShardPlan:
    """What rank ``rank`` of ``size`` holds of a model with ``config`` (global shapes)."""

    config: ModelConfig
    rank: int = 0
    size: int = 1
    awq_group_size: int | None = None

    @property
    def kv_parts(self) -> int:
        """Distinct K/V head blocks: ``size``, or the K/V head count when it is smaller."""
        return min(self.config.num_kv_heads, self.size)

    @property
    def kv_index(self) -> int:
        """The K/V head block this rank holds (the one its query heads read)."""
        return self.rank * self.kv_parts // self.size

    @property
    def vocab_rows(self) -> int:
        """Vocabulary rows per rank (the last rank's are padded with zeros)."""
        return -(-self.config.vocab_size // self.size)

    @property
    def vocab_start(self) -> int:
        return self.rank * self.vocab_rows

    def local_config(self) -> ModelConfig:
        """The shapes of this rank's shard: its heads and its slice of the MLP."""
        c = self.config
        if self.size == 1:
            return c
        moe = c.moe and replace(c.moe, intermediate_size=c.moe.intermediate_size // self.size)
        return replace(c, num_heads=c.num_heads // self.size,
                       num_kv_heads=c.num_kv_heads // self.kv_parts,
                       intermediate_size=c.intermediate_size // self.size, moe=moe)

    def linear_split(self, module: str) -> tuple[str, int, int, int] | None:
        """How linear ``module`` splits: ``(dim, index, count, features along dim)``."""
        c = self.config
        module = _role(module)
        if module in ("mlp.experts.gate", "mlp.experts.up"):
            return OUT, self.rank, self.size, c.moe.intermediate_size
        if module == "mlp.experts.down":
            return IN, self.rank, self.size, c.moe.intermediate_size
        if module == "attn.q":
            return OUT, self.rank, self.size, c.q_size
        if module in ("attn.k", "attn.v"):
            return OUT, self.kv_index, self.kv_parts, c.kv_size
        if module in ("mlp.gate", "mlp.up"):
            return OUT, self.rank, self.size, c.intermediate_size
        if module == "attn.o":
            return IN, self.rank, self.size, c.q_size
        if module == "mlp.down":
            return IN, self.rank, self.size, c.intermediate_size
        return None

    def select(self, name: str, shape: tuple[int, ...]) -> TensorPart:
        """The part of canonical weight ``name`` (of full ``shape``) this rank reads."""
        if self.size == 1:
            return None
        if name in VOCAB_PARALLEL:
            rows = shape[0]
            return 0, min(self.vocab_start, rows), min(self.vocab_start + self.vocab_rows, rows)
        if not name.startswith("layers."):
            return None
        module, _, param = name.split(".", 2)[2].rpartition(".")
        split = self.linear_split(module)
        if split is None:
            return None
        dim, index, count, features = split
        start, stop = split_bounds(features, index, count)
        return tensor_slice(param, dim, start, stop, self.awq_group_size)

    def keeps_bias(self, module: str) -> bool:
        """Row-parallel outputs are summed over the ranks, so only rank 0 adds their bias."""
        return _role(module) not in (*ROW_PARALLEL, "mlp.experts.down") or self.rank == 0
