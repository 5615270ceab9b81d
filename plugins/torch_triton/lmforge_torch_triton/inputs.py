"""Device tensors of one forward step, built from the scheduler's :class:`ForwardBatch`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lmforge.engine.batch import ForwardBatch
from lmforge.engine.transfer import fill_prev_tokens, to_device


@dataclass
class StepInputs:
    """What the decoder reads in one step (names follow the op signatures in ``ops/reference.py``).

    ``logit_rows`` indexes the token rows whose logits are returned. ``kv_lens_host`` and
    ``q_lens_host`` are the host copies the rotary embedding needs for dynamic NTK scaling.
    """

    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    slot_mapping: torch.Tensor  # [T] int64
    block_tables: torch.Tensor  # [B, max_blocks] int32
    kv_lens: torch.Tensor  # [B] int32
    cu_q_lens: torch.Tensor  # [B + 1] int32
    logit_rows: torch.Tensor  # [k] int64
    is_decode: bool
    kv_lens_host: list[int]
    q_lens_host: list[int]
    # A mixed step lists its decodes (one query each) first: they run through the decode kernel,
    # which reads each K/V head once for its query group, and the rest through the prefill one,
    # whose queries start at ``prefill_cu_q_lens`` (``cu_q_lens`` of the remaining sequences).
    num_decode_seqs: int = 0
    prefill_cu_q_lens: torch.Tensor | None = None

    @property
    def max_q_len(self) -> int:
        """The longest query of the step, known on the host (1 in a captured decode graph)."""
        return max(self.q_lens_host, default=1)


def padded_block_tables(block_tables: list[list[int]]) -> list[list[int]]:
    """Rows padded to the longest; padding is block 0, a valid id: kernels never read past
    kv_lens."""
    width = max(len(t) for t in block_tables)
    return [t + [0] * (width - len(t)) for t in block_tables]


def build_step_inputs(batch: ForwardBatch, device: torch.device) -> StepInputs:
    """Positions, cache slots and attention metadata of ``batch``, on ``device``."""
    bs = batch.block_size
    positions: list[int] = []
    slots: list[int] = []
    logit_rows: list[int] = []
    cu = [0]
    for q_len, kv_len, table, need in zip(
        batch.q_lens, batch.kv_lens, batch.block_tables, batch.need_logits, strict=True
    ):
        start = kv_len - q_len
        span = range(start, kv_len)
        positions.extend(span)
        slots.extend(table[p // bs] * bs + p % bs for p in span)
        cu.append(cu[-1] + q_len)
        if need and not batch.return_all_logits:
            logit_rows.append(cu[-1] - 1)
    if batch.return_all_logits:
        logit_rows = list(range(batch.num_tokens))
    tables = padded_block_tables(batch.block_tables)

    def tensor(values, dtype):
        return to_device(values, dtype, device)

    decodes = 0
    if not batch.is_decode:
        while batch.q_lens[decodes] == 1:
            decodes += 1
    input_ids = tensor(batch.input_ids, torch.int64)
    fill_prev_tokens(input_ids, batch, [end - 1 for end in cu[1:]])
    return StepInputs(
        input_ids=input_ids,
        positions=tensor(positions, torch.int64),
        slot_mapping=tensor(slots, torch.int64),
        block_tables=tensor(tables, torch.int32),
        kv_lens=tensor(batch.kv_lens, torch.int32),
        cu_q_lens=tensor(cu, torch.int32),
        logit_rows=tensor(logit_rows, torch.int64),
        is_decode=batch.is_decode,
        kv_lens_host=list(batch.kv_lens),
        q_lens_host=list(batch.q_lens),
        num_decode_seqs=decodes,
        prefill_cu_q_lens=tensor([c - decodes for c in cu[decodes:]], torch.int32)
        if decodes else None,
    )
