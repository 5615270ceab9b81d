"""A step's device inputs, computed on the device from the resident block tables, against the
same numbers built from the batch's lists on the host (the plain reference)."""

from __future__ import annotations

import random

import pytest
import torch
from lmforge.engine.batch import ForwardBatch
from lmforge_torch_triton.block_table import DeviceBlockTables
from lmforge_torch_triton.inputs import build_step_inputs

BS = 4


def reference(batch: ForwardBatch) -> dict[str, list]:
    """Positions, cache slots, query starts, logit rows and input ids, from the lists."""
    positions, slots, logit_rows, cu = [], [], [], [0]
    ids = list(batch.input_ids)
    for i, (q, kv, table) in enumerate(zip(batch.q_lens, batch.kv_lens, batch.block_tables,
                                           strict=True)):
        span = range(kv - q, kv)
        positions += span
        slots += [table[p // BS] * BS + p % BS for p in span]
        cu.append(cu[-1] + q)
        if batch.need_logits[i]:
            logit_rows.append(cu[-1] - 1)
        if batch.prev_rows and batch.prev_rows[i] >= 0:
            ids[cu[-1] - 1] = int(batch.prev_tokens[batch.prev_rows[i]])
    if batch.return_all_logits:
        logit_rows = list(range(len(ids)))
    return dict(positions=positions, slot_mapping=slots, cu_q_lens=cu, logit_rows=logit_rows,
                input_ids=ids)


def random_batch(rng: random.Random, rows: list[int], tables: dict[int, list[int]],
                 kind: str) -> ForwardBatch:
    """A batch over ``rows`` (slots), growing their tables; writes only the new blocks."""
    q_lens, kv_lens, block_tables = [], [], []
    new_slots, new_cols, new_ids = [], [], []
    for slot in rows:
        table = tables.setdefault(slot, [])
        q = 1 if kind == "decode" or (kind == "mixed" and rng.random() < 0.5) else rng.randint(2, 9)
        kv = len(table) * BS - rng.randrange(BS) + q if table else q
        while len(table) * BS < kv:
            new_slots.append(slot)
            new_cols.append(len(table))
            table.append(rng.randrange(200))
            new_ids.append(table[-1])
        q_lens.append(q)
        kv_lens.append(kv)
        block_tables.append(list(table))
    if kind == "mixed":  # decodes first, as the scheduler orders them
        order = sorted(range(len(rows)), key=lambda i: q_lens[i] != 1)
        q_lens, kv_lens, block_tables = ([xs[i] for i in order]
                                         for xs in (q_lens, kv_lens, block_tables))
        rows = [rows[i] for i in order]
    tokens = sum(q_lens)
    prev = torch.tensor([rng.randrange(1000) for _ in range(3)])
    return ForwardBatch(
        input_ids=[rng.randrange(1000) for _ in range(tokens)], q_lens=q_lens, kv_lens=kv_lens,
        block_tables=block_tables, need_logits=[rng.random() < 0.7 for _ in rows],
        block_size=BS, return_all_logits=kind == "scoring", prev_tokens=prev,
        prev_rows=[rng.choice([-1, 0, 2]) for _ in rows], slots=list(rows),
        new_block_slots=new_slots, new_block_cols=new_cols, new_block_ids=new_ids)


@pytest.mark.parametrize("kind", ["decode", "prefill", "mixed", "scoring"])
def test_device_inputs_equal_the_list_reference(kind):
    rng = random.Random(kind)
    tables = DeviceBlockTables(rows=4, cols=2, device=torch.device("cpu"))  # grows as needed
    held: dict[int, list[int]] = {}
    for _ in range(12):
        rows = rng.sample(range(6), rng.randint(1, 6))
        batch = random_batch(rng, rows, held, kind)
        for with_slots in (True, False):
            if not with_slots:
                batch.slots = []
            inputs = build_step_inputs(batch, torch.device("cpu"), tables)
            want = reference(batch)
            for name, values in want.items():
                assert getattr(inputs, name).tolist() == values, (name, with_slots)
            width = inputs.block_tables.shape[1]
            assert width == max(len(t) for t in batch.block_tables)
            assert [row[: len(t)] for row, t in zip(inputs.block_tables.tolist(),
                                                    batch.block_tables, strict=True)] == \
                batch.block_tables
            assert inputs.kv_lens.tolist() == batch.kv_lens
            assert inputs.is_decode == (kind == "decode")
            if inputs.num_decode_seqs:
                assert batch.q_lens[: inputs.num_decode_seqs] == [1] * inputs.num_decode_seqs
                assert inputs.prefill_cu_q_lens.tolist() == [
                    c - inputs.num_decode_seqs for c in want["cu_q_lens"][inputs.num_decode_seqs:]]
    assert tables.table.shape[0] >= 6
