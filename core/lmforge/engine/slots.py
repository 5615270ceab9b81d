"""Batch slots: the row each running sequence holds in a runner's device-resident block table.

A runner that keeps block tables on the device between steps (vLLM's persistent input batch,
TurboMind's batch slots) needs from each step only what changed: the slot of each row, and the
blocks those slots do not hold yet. The scheduler gives a sequence a slot when it starts running
and takes it back when it stops; the lowest free slot goes first, so slots stay below the
largest number of sequences that ran at once.
"""

from __future__ import annotations

import heapq

from .batch import ForwardBatch
from .sequence import Sequence


class BatchSlots:
    """Hands out slots 0, 1, 2, … and takes them back."""

    def __init__(self) -> None:
        self._free: list[int] = []
        self._next = 0

    @property
    def num_taken(self) -> int:
        return self._next - len(self._free)

    def take(self, seq: Sequence) -> None:
        """Give ``seq`` a slot that holds none of its blocks yet."""
        if self._free:
            seq.slot = heapq.heappop(self._free)
        else:
            seq.slot, self._next = self._next, self._next + 1
        seq.num_slot_blocks = 0

    def release(self, seq: Sequence) -> None:
        """Take back ``seq``'s slot, if it holds one."""
        if seq.slot >= 0:
            heapq.heappush(self._free, seq.slot)
            seq.slot = -1
            seq.num_slot_blocks = 0


def add_new_blocks(batch: ForwardBatch, seq: Sequence) -> None:
    """Append the blocks ``seq``'s slot does not hold yet to the batch's ``new_block_*`` lists
    (see :class:`ForwardBatch`)."""
    held, blocks = seq.num_slot_blocks, seq.block_ids
    batch.new_block_slots.extend([seq.slot] * (len(blocks) - held))
    batch.new_block_cols.extend(range(held, len(blocks)))
    batch.new_block_ids.extend(blocks[held:])
