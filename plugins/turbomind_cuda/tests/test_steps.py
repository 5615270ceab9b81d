"""The host-side step plan: decode rows first, prompt chunks cut into prefill tiles."""

from lmforge.engine.batch import ForwardBatch
from lmforge_turbomind_cuda.steps import decode_splits, plan_step, tile_span


def test_plan_of_a_mixed_step():
    batch = ForwardBatch(
        input_ids=[5, 6] + list(range(130)), q_lens=[1, 1, 130], kv_lens=[9, 3, 134],
        block_tables=[[4, 7, 1], [2], [0, 3, 5, 6, 8, 9, 10, 11, 12]],
        need_logits=[True, True, True], block_size=16,
    )
    plan = plan_step(batch, span=64)
    assert plan.num_decode == 2
    assert plan.positions[:2] == [8, 2] and plan.positions[2] == 4
    assert plan.slots[:3] == [4 * 16 + 8, 2 * 16 + 2, 0 * 16 + 4]
    assert (plan.tile_seq, plan.tile_start) == ([2, 2, 2], [0, 64, 128])
    assert plan.q_starts == [0, 1, 2, 132]
    assert plan.logit_rows == [0, 1, 131]
    assert plan.width == 9 and len(plan.block_tables) == 27


def test_a_decode_after_a_prompt_goes_through_the_prefill_kernel():
    batch = ForwardBatch(input_ids=[1, 2, 3], q_lens=[2, 1], kv_lens=[2, 5],
                         block_tables=[[0], [1, 2]], need_logits=[False, True], block_size=4)
    plan = plan_step(batch, span=64)
    assert plan.num_decode == 0
    assert (plan.tile_seq, plan.tile_start) == ([0, 1], [0, 0])
    assert plan.logit_rows == [2]


def test_decode_splits_fill_the_gpu():
    assert decode_splits(1, 8, num_sms=132) == 16
    assert decode_splits(4, 8, num_sms=132) == 9
    assert decode_splits(256, 8, num_sms=132) == 1


def test_tiles_hold_every_query_head_of_a_group():
    assert tile_span(32, 8) == 16 and tile_span(28, 4) == 9 and tile_span(4, 4) == 64
    batch = ForwardBatch(input_ids=list(range(130)), q_lens=[130], kv_lens=[130],
                         block_tables=[list(range(9))], need_logits=[True], block_size=16)
    plan = plan_step(batch, span=tile_span(32, 8))
    assert plan.tile_start == list(range(0, 130, 16)) and plan.tile_seq == [0] * 9
