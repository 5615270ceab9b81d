"""The driver's commands to the workers, each one flat int64 array, and the channel they cross.

A step's :class:`~lmforge.engine.batch.ForwardBatch` becomes a header and its lists end to end
(no pickled objects): ``[STEP, seqs, tokens, block_size, return_all_logits, prev_count,
new_blocks]``, then input ids, q lens, kv lens and need-logits flags. A batch with slots
(``new_blocks >= 0``) then carries its slots and its new blocks' slots, columns and ids: every
rank keeps the same device-resident block tables, so the full tables never cross. A batch
without slots carries its block-table lengths and the tables. Last, when the step reads tokens
the previous step is still sampling, ``prev_rows``. Those tokens themselves never reach the
host: rank 0 broadcasts them on the device (see :meth:`Channel.prev_tokens`).

The channel is a broadcast over a gloo (CPU) group: a fixed first chunk that holds most steps
whole, and the rest of a larger one in a second broadcast.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from lmforge.engine.batch import ForwardBatch

STEP, NUM_BLOCKS, ALLOCATE, CLOSE = 1, 2, 3, 4
CHUNK = 2048  # int64s in the first broadcast of a command: a decode step of ~300 sequences
_STEP_HEADER = 7


@dataclass
class Command:
    kind: int
    args: np.ndarray  # int64


def encode_step(batch: ForwardBatch) -> np.ndarray:
    """``batch`` as one int64 array (``prev_tokens`` aside)."""
    seqs = batch.num_seqs
    prev = batch.prev_tokens is not None and any(r >= 0 for r in batch.prev_rows)
    header = [STEP, seqs, batch.num_tokens, batch.block_size, int(batch.return_all_logits),
              len(batch.prev_tokens) if prev else -1,
              len(batch.new_block_ids) if batch.slots else -1]
    parts = [header, batch.input_ids, batch.q_lens, batch.kv_lens, batch.need_logits]
    if batch.slots:
        parts += [batch.slots, batch.new_block_slots, batch.new_block_cols, batch.new_block_ids]
    else:
        parts += [[len(t) for t in batch.block_tables], *batch.block_tables]
    if prev:
        parts.append(batch.prev_rows)
    return np.fromiter(itertools.chain.from_iterable(parts), dtype=np.int64)


def decode_step(args: np.ndarray) -> tuple[ForwardBatch, int]:
    """The batch of an encoded step, and how many previous tokens it reads (-1: none). A batch
    with slots comes without ``block_tables`` (the receiving runner keeps them)."""
    _, seqs, tokens, block_size, all_logits, prev_count, new_blocks = (
        args[:_STEP_HEADER].tolist())
    at = _STEP_HEADER

    def take(n: int) -> list[int]:
        nonlocal at
        at += n
        return args[at - n : at].tolist()

    batch = ForwardBatch(input_ids=take(tokens), q_lens=take(seqs), kv_lens=take(seqs),
                         block_tables=[], need_logits=[bool(x) for x in take(seqs)],
                         block_size=block_size, return_all_logits=bool(all_logits))
    if new_blocks >= 0:
        batch.slots = take(seqs)
        batch.new_block_slots, batch.new_block_cols, batch.new_block_ids = (
            take(new_blocks) for _ in range(3))
    else:
        table_lens = take(seqs)
        batch.block_tables = [take(n) for n in table_lens]
    if prev_count >= 0:
        batch.prev_rows = take(seqs)
    return batch, prev_count


class Channel:
    """Rank 0 broadcasts commands over ``control`` (gloo); the other ranks receive them in
    order. ``world`` carries the previous step's sampled tokens, device to device."""

    def __init__(self, control: dist.ProcessGroup, world: dist.ProcessGroup,
                 device: torch.device) -> None:
        self.control = control
        self.world = world
        self.device = device
        self._chunk = torch.zeros(CHUNK, dtype=torch.int64)

    def send(self, kind: int, args: np.ndarray | list[int] = ()) -> None:
        args = np.asarray(args, dtype=np.int64)
        head = min(len(args), CHUNK - 2)
        chunk = self._chunk.numpy()
        chunk[:2] = (kind, len(args))
        chunk[2 : 2 + head] = args[:head]
        dist.broadcast(self._chunk, 0, group=self.control)
        if len(args) > head:
            dist.broadcast(torch.from_numpy(np.ascontiguousarray(args[head:])), 0,
                           group=self.control)

    def receive(self) -> Command:
        dist.broadcast(self._chunk, 0, group=self.control)
        kind, length = self._chunk[:2].tolist()
        head = min(length, CHUNK - 2)
        args = self._chunk[2 : 2 + head].numpy().copy()
        if length > head:
            rest = torch.empty(length - head, dtype=torch.int64)
            dist.broadcast(rest, 0, group=self.control)
            args = np.concatenate([args, rest.numpy()])
        return Command(kind, args)

    def prev_tokens(self, tokens: torch.Tensor | None, count: int) -> torch.Tensor:
        """The previous step's sampled ids on every rank: rank 0 passes its tensor, the others
        ``None``; queued on the device, no host wait."""
        if tokens is None:
            tokens = torch.empty(count, dtype=torch.int64, device=self.device)
        dist.broadcast(tokens, 0, group=self.world)
        return tokens

    def minimum(self, value: int) -> int:
        """The smallest ``value`` over the ranks (every rank calls it)."""
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.control)
        return int(t.item())
