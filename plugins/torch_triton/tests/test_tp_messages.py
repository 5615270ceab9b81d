"""A step's ForwardBatch as flat integers, and the channel that broadcasts commands."""

from __future__ import annotations

import numpy as np
import torch
from lmforge.engine.batch import ForwardBatch
from lmforge_torch_triton.parallel.messages import CHUNK, STEP, decode_step, encode_step


def _fields(batch: ForwardBatch) -> dict:
    return {k: getattr(batch, k) for k in ("input_ids", "q_lens", "kv_lens", "block_tables",
                                           "need_logits", "block_size", "return_all_logits",
                                           "prev_rows")}


def test_mixed_step_round_trips():
    batch = ForwardBatch(input_ids=[5, 6, 7, 8, 9, 10], q_lens=[1, 4, 1], kv_lens=[9, 4, 130],
                         block_tables=[[3, 1], [7], [2, 4, 6, 8, 9]],
                         need_logits=[True, False, True], block_size=32)
    args = encode_step(batch)
    assert args.dtype == np.int64 and args[0] == STEP
    decoded, prev = decode_step(args)
    assert prev == -1 and _fields(decoded) == _fields(batch)


def test_pending_tokens_travel_as_rows_not_values():
    tokens = torch.tensor([11, 12, 13])
    batch = ForwardBatch(input_ids=[-1, 4, -1], q_lens=[1, 1, 1], kv_lens=[3, 5, 7],
                         block_tables=[[0], [1], [2]], need_logits=[True] * 3, block_size=16,
                         prev_tokens=tokens, prev_rows=[2, -1, 0])
    decoded, prev = decode_step(encode_step(batch))
    assert prev == 3 and decoded.prev_rows == [2, -1, 0] and decoded.prev_tokens is None
    assert decoded.input_ids == [-1, 4, -1]
    # A step whose rows read nothing from the previous one carries no rows.
    batch.prev_rows = [-1, -1, -1]
    assert decode_step(encode_step(batch))[1] == -1


def test_perplexity_steps_and_large_batches():
    batch = ForwardBatch(input_ids=list(range(3000)), q_lens=[3000], kv_lens=[3000],
                         block_tables=[list(range(47))], need_logits=[True], block_size=64,
                         return_all_logits=True)
    args = encode_step(batch)
    assert len(args) > CHUNK  # crosses in two broadcasts
    assert _fields(decode_step(args)[0]) == _fields(batch)


def test_a_step_with_slots_sends_new_blocks_not_tables():
    batch = ForwardBatch(input_ids=[5, 6, 7], q_lens=[1, 2], kv_lens=[65, 2],
                         block_tables=[[3, 1], [7]], need_logits=[True, True], block_size=64,
                         slots=[4, 0], new_block_slots=[4, 0], new_block_cols=[1, 0],
                         new_block_ids=[1, 7], prev_tokens=torch.tensor([9]), prev_rows=[0, -1])
    decoded, prev = decode_step(encode_step(batch))
    assert prev == 1 and decoded.block_tables == []
    for name in ("input_ids", "q_lens", "kv_lens", "need_logits", "slots", "new_block_slots",
                 "new_block_cols", "new_block_ids", "prev_rows"):
        assert getattr(decoded, name) == getattr(batch, name), name
    # A decode step whose slots hold every block already sends no block at all.
    steady = ForwardBatch(input_ids=[1], q_lens=[1], kv_lens=[66], block_tables=[[3, 1]],
                          need_logits=[True], block_size=64, slots=[4])
    assert len(encode_step(steady)) == 7 + 4 + 1
    assert decode_step(encode_step(steady))[0].slots == [4]
