"""Device tensors of one forward step, built from the scheduler's :class:`ForwardBatch`.

The host sends each step's per-row numbers (input ids, context lengths, slots, query lengths,
pending-token rows) in one copy; positions, cache slots and the step's block-table rows are
computed on the device from them and the block tables: the runner's device-resident ones
(:class:`DeviceBlockTables`) when the batch names slots, else the batch's own lists, copied.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from lmforge.engine.batch import ForwardBatch
from lmforge.engine.transfer import to_device

from .block_table import DeviceBlockTables


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


@dataclass
class RowData:
    """A step's per-row numbers on the device, from one host-to-device copy (int64)."""

    input_ids: torch.Tensor  # [T]
    kv_lens: torch.Tensor  # [B]
    slots: torch.Tensor | None  # [B], when the batch names slots
    q_lens: torch.Tensor | None  # [B], unless every row is one decode token
    prev_rows: torch.Tensor | None  # [B], when rows read the previous step's tokens


def upload_rows(batch: ForwardBatch, device: torch.device) -> RowData:
    """Copy the per-row lists of ``batch`` that the device needs, in one transfer."""
    parts = {"input_ids": batch.input_ids, "kv_lens": batch.kv_lens}
    if batch.slots:
        parts["slots"] = batch.slots
    if not batch.is_decode:
        parts["q_lens"] = batch.q_lens
    if batch.prev_rows and batch.prev_tokens is not None and len(batch.prev_tokens):
        parts["prev_rows"] = batch.prev_rows
    flat = to_device(list(itertools.chain.from_iterable(parts.values())), torch.int64, device)
    tensors = dict(zip(parts, flat.split([len(p) for p in parts.values()]), strict=True))
    return RowData(tensors["input_ids"], tensors["kv_lens"], tensors.get("slots"),
                   tensors.get("q_lens"), tensors.get("prev_rows"))


def fill_pending(input_ids: torch.Tensor, last_rows: torch.Tensor, rows: RowData,
                 prev_tokens) -> None:
    """Put the previous step's sampled tokens (``ForwardBatch.prev_tokens``) into the input
    rows that wait for them, on the device: ``last_rows[i]`` is row ``i``'s last input token."""
    if rows.prev_rows is None:
        return
    src = rows.prev_rows
    taken = prev_tokens.index_select(0, src.clamp(min=0)).to(input_ids.dtype)
    input_ids[last_rows] = torch.where(src >= 0, taken, input_ids[last_rows])


def table_of(batch: ForwardBatch, tables: DeviceBlockTables | None,
             device: torch.device) -> torch.Tensor:
    """The block table whose rows the batch's slots index: the runner's resident one (after
    writing the step's new blocks), or, for a batch without slots, its own tables copied in
    row order."""
    if batch.slots and tables is not None:
        tables.write(batch)
        return tables.table
    return to_device(padded_block_tables(batch.block_tables), torch.int32, device)


def cache_slots(block_tables: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor,
                block_size: int) -> torch.Tensor:
    """The pool slot of each token: block ``positions // block_size`` of its row's table."""
    blocks = block_tables[rows, positions // block_size].to(torch.int64)
    return blocks * block_size + positions % block_size


def build_step_inputs(batch: ForwardBatch, device: torch.device,
                      tables: DeviceBlockTables | None = None) -> StepInputs:
    """Positions, cache slots and attention metadata of ``batch``, on ``device``; ``tables``
    are the runner's resident block tables, used when the batch names slots."""
    n, t = batch.num_seqs, batch.num_tokens
    rows = upload_rows(batch, device)
    table = table_of(batch, tables, device)
    width = -(-max(batch.kv_lens) // batch.block_size)
    if rows.slots is not None:
        block_tables = table[:, :width].index_select(0, rows.slots)
    else:
        block_tables = table
    kv = rows.kv_lens
    seq_rows = torch.arange(n, device=device)
    if rows.q_lens is None:  # one token per row
        cu = torch.arange(n + 1, device=device)
        positions, token_rows = kv - 1, seq_rows
    else:
        cu = torch.zeros(n + 1, dtype=torch.int64, device=device)
        torch.cumsum(rows.q_lens, 0, out=cu[1:])
        token_rows = torch.repeat_interleave(seq_rows, rows.q_lens, output_size=t)
        first = kv - rows.q_lens - cu[:-1]  # position of row i's token j is first[i] + its index
        positions = first[token_rows] + torch.arange(t, device=device)
    last_rows = cu[1:] - 1
    input_ids = rows.input_ids
    fill_pending(input_ids, last_rows, rows, batch.prev_tokens)
    if batch.return_all_logits:
        logit_rows = torch.arange(t, device=device)
    elif all(batch.need_logits):
        logit_rows = last_rows
    else:
        ends = itertools.accumulate(batch.q_lens)
        logit_rows = to_device([end - 1 for end, need in zip(ends, batch.need_logits, strict=True)
                                if need], torch.int64, device)
    decodes = 0
    if rows.q_lens is not None:
        while batch.q_lens[decodes] == 1:
            decodes += 1
    return StepInputs(
        input_ids=input_ids,
        positions=positions,
        slot_mapping=cache_slots(block_tables, token_rows, positions, batch.block_size),
        block_tables=block_tables,
        kv_lens=kv.to(torch.int32),
        cu_q_lens=cu.to(torch.int32),
        logit_rows=logit_rows,
        is_decode=rows.q_lens is None,
        kv_lens_host=batch.kv_lens,
        q_lens_host=batch.q_lens,
        num_decode_seqs=decodes,
        prefill_cu_q_lens=(cu[decodes:] - decodes).to(torch.int32) if decodes else None,
    )
