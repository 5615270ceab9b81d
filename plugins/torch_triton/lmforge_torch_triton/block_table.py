"""Each running sequence's block table on the device, kept between steps in the row of its
batch slot (``lmforge.engine.slots``); a step writes only the blocks its slots do not hold yet.

Rebuilding every sequence's table as Python lists and copying them all each step costs host
time in proportion to the batch times the tables' width; the blocks that change per step are
about one per ``block_size`` decodes per sequence, plus the tables of sequences that start.
"""

from __future__ import annotations

import torch
from lmforge.engine.batch import ForwardBatch
from lmforge.engine.transfer import to_device


class DeviceBlockTables:
    """``table[slot, j]`` is block ``j`` of the sequence in ``slot``; columns past a sequence's
    blocks hold stale ids that kernels never read (they stop at ``kv_lens``)."""

    def __init__(self, rows: int, cols: int, device: torch.device) -> None:
        self.device = device
        self.table = torch.zeros(rows, cols, dtype=torch.int32, device=device)

    def write(self, batch: ForwardBatch) -> None:
        """Write the step's new blocks (``batch.new_block_*``) into their slots."""
        if not batch.new_block_ids:
            return
        # Slots stay below the most sequences run at once and tables within session_len, so
        # the table grows only when the runner was sized for less than the scheduler uses.
        self._reserve(max(batch.new_block_slots) + 1, max(batch.new_block_cols) + 1)
        index = to_device([batch.new_block_slots, batch.new_block_cols, batch.new_block_ids],
                          torch.int64, self.device)
        self.table.index_put_((index[0], index[1]), index[2].to(torch.int32))

    def _reserve(self, rows: int, cols: int) -> None:
        old_rows, old_cols = self.table.shape
        if rows <= old_rows and cols <= old_cols:
            return
        table = self.table.new_zeros(max(rows, old_rows), max(cols, old_cols))
        table[:old_rows, :old_cols] = self.table
        self.table = table
