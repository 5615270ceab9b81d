"""One step's inputs for the library, built on the host from the scheduler's ForwardBatch.

Every int32 array of the step travels in one page-locked host tensor and one copy; the step
struct points into it. Sequences that lead the batch with one new token each run through the
decode kernel; every later sequence is cut into tiles of :func:`tile_span` queries for the
prefill kernel.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
from lmforge.engine.batch import ForwardBatch
from lmforge.engine.transfer import fill_prev_tokens, to_device

from .library import TmStep

PREFILL_ROWS = 64  # rows of a prefill tile (kTileM in prefill_attention.cu)
MAX_SPLITS = 16


def tile_span(heads: int, kv_heads: int) -> int:
    """Query positions per prefill tile: its rows hold every query head of a K/V head's group."""
    return PREFILL_ROWS // (heads // kv_heads)


def decode_splits(num_seqs: int, blocks_per_seq: int, num_sms: int) -> int:
    """Split-K parts for the decode kernel: enough blocks for two waves over the GPU, at most
    :data:`MAX_SPLITS`. (A split past a short context finds no tokens and costs one idle block.)"""
    blocks = max(1, num_seqs * blocks_per_seq)
    return min(MAX_SPLITS, max(1, -(-2 * num_sms // blocks)))


def leading_decodes(q_lens: list[int]) -> int:
    count = 0
    while count < len(q_lens) and q_lens[count] == 1:
        count += 1
    return count


@dataclass
class HostStep:
    """A step's arrays as host lists (the layout :func:`upload` copies)."""

    positions: list[int]
    slots: list[int]
    block_tables: list[int]
    width: int
    kv_lens: list[int]
    q_starts: list[int]
    tile_seq: list[int]
    tile_start: list[int]
    logit_rows: list[int]
    num_decode: int


def plan_step(batch: ForwardBatch, span: int) -> HostStep:
    """Positions, cache slots, padded block tables, prefill tiles of ``span`` queries and logit
    rows of ``batch``."""
    bs = batch.block_size
    positions: list[int] = []
    slots: list[int] = []
    q_starts = [0]
    logit_rows: list[int] = []
    for q_len, kv_len, table, need in zip(batch.q_lens, batch.kv_lens, batch.block_tables,
                                          batch.need_logits, strict=True):
        new = range(kv_len - q_len, kv_len)
        positions.extend(new)
        slots.extend(table[p // bs] * bs + p % bs for p in new)
        q_starts.append(q_starts[-1] + q_len)
        if need and not batch.return_all_logits:
            logit_rows.append(q_starts[-1] - 1)
    if batch.return_all_logits:
        logit_rows = list(range(batch.num_tokens))
    width = max(len(t) for t in batch.block_tables)
    tables = [b for t in batch.block_tables for b in t + [0] * (width - len(t))]
    num_decode = leading_decodes(batch.q_lens)
    tile_seq, tile_start = [], []
    for seq in range(num_decode, batch.num_seqs):
        for start in range(0, batch.q_lens[seq], span):
            tile_seq.append(seq)
            tile_start.append(start)
    return HostStep(positions, slots, tables, width, list(batch.kv_lens), q_starts, tile_seq,
                    tile_start, logit_rows, num_decode)


class DeviceStep:
    """A :class:`HostStep` on the device and the ``TmStep`` that points into it; holds the
    tensors for as long as the step may run."""

    ORDER = ("positions", "slots", "block_tables", "kv_lens", "q_starts", "tile_seq",
             "tile_start", "logit_rows")

    def __init__(self, batch: ForwardBatch, plan: HostStep, device: torch.device,
                 vocab: int, dtype: torch.dtype, num_splits: int) -> None:
        packed: list[int] = []
        offsets = {}
        for name in self.ORDER:
            offsets[name] = len(packed)
            packed += getattr(plan, name)
        self.ints = to_device(packed or [0], torch.int32, device)
        self.input_ids = to_device(batch.input_ids, torch.int64, device)
        fill_prev_tokens(self.input_ids, batch, [end - 1 for end in plan.q_starts[1:]])
        rows = len(plan.logit_rows)
        self.logits = torch.empty(rows, vocab, dtype=torch.float32, device=device)
        self.logits_lowp = torch.empty(rows, vocab, dtype=dtype, device=device)
        base = self.ints.data_ptr()

        def ptr(name: str) -> int:
            return base + 4 * offsets[name]

        self.struct = TmStep(
            num_tokens=batch.num_tokens, num_seqs=batch.num_seqs, num_decode=plan.num_decode,
            num_splits=num_splits, num_prefill_tiles=len(plan.tile_seq), num_logits=rows,
            block_table_stride=plan.width, input_ids=self.input_ids.data_ptr(),
            **{name: ptr(name) for name in self.ORDER},
            logits_lowp=self.logits_lowp.data_ptr() if rows else None,
            logits=self.logits.data_ptr() if rows else None,
        )

    def ref(self):
        return ctypes.byref(self.struct)
