"""Batch slots: which slot each running sequence holds, and which blocks each step sends to a
runner that keeps block tables between steps (appends, frees, re-admission, failed steps)."""

from __future__ import annotations

from lmforge.engine.scheduler import Scheduler, SchedulerOutput
from lmforge.engine.sequence import Sequence
from lmforge.engine.slots import BatchSlots
from test_scheduler import FakeRunner, accept_tokens, check_invariants, make, seq


def writes(batch) -> list[tuple[int, int, int]]:
    return list(zip(batch.new_block_slots, batch.new_block_cols, batch.new_block_ids, strict=True))


def run_step(sched: Scheduler, runner: FakeRunner, update: bool = True):
    """Schedule, build and run one step, finishing sequences at ``max_new_tokens``;
    ``update=False`` is a step that failed in the runner."""
    out = sched.schedule()
    batch = sched.build_batch(out)
    tokens = runner.execute(batch)
    if update:
        sched.update(out)
        accept_tokens(sched, out, batch, tokens)
    check_invariants(sched)
    return out, batch


def test_slots_are_handed_out_lowest_first_and_taken_back():
    slots = BatchSlots()
    seqs = [Sequence([1]) for _ in range(4)]
    for s in seqs:
        slots.take(s)
    assert [s.slot for s in seqs] == [0, 1, 2, 3] and slots.num_taken == 4
    slots.release(seqs[2])
    slots.release(seqs[0])
    slots.release(seqs[0])  # a sequence without a slot: nothing to give back
    assert (seqs[0].slot, slots.num_taken) == (-1, 2)
    fresh = [Sequence([1]) for _ in range(3)]
    for s in fresh:
        slots.take(s)
    assert [s.slot for s in fresh] == [0, 2, 4]


def test_a_new_sequence_sends_its_whole_table_then_only_appended_blocks():
    sched, runner = make(block_size=4), FakeRunner(64, 4)
    a = seq(range(1, 8), max_new=20)
    sched.add(a)
    _, batch = run_step(sched, runner)  # the prompt's 7 tokens: two blocks
    assert batch.slots == [0] and writes(batch) == [(0, 0, a.block_ids[0]), (0, 1, a.block_ids[1])]
    assert a.num_slot_blocks == 2
    _, batch = run_step(sched, runner)  # position 7: still in block 1
    assert writes(batch) == [] and batch.slots == [0]
    _, batch = run_step(sched, runner)  # position 8 starts block 2
    assert writes(batch) == [(0, 2, a.block_ids[2])]
    b = seq(range(50, 53), max_new=5)
    sched.add(b)
    _, batch = run_step(sched, runner)
    assert batch.slots == [0, 1] and writes(batch) == [(1, 0, b.block_ids[0])]


def test_finished_and_aborted_sequences_free_their_slots_for_newcomers():
    sched, runner = make(block_size=4), FakeRunner(64, 4)
    a, b = seq(range(1, 6), max_new=20), seq(range(10, 16), max_new=20)
    sched.add(a)
    sched.add(b)
    run_step(sched, runner)
    assert (a.slot, b.slot) == (0, 1)
    sched.abort(a.seq_id)
    assert a.slot == -1 and sched.slots.num_taken == 1
    c = seq(range(20, 23), max_new=20)
    sched.add(c)
    _, batch = run_step(sched, runner)
    assert c.slot == 0 and batch.slots == [1, 0]
    assert writes(batch) == [(0, 0, c.block_ids[0])]  # slot 0's old blocks are overwritten
    sched.finish(b, "stop")
    assert sched.slots.num_taken == 1 and b.slot == -1


def test_a_preempted_sequence_comes_back_as_new():
    sched, runner = make(num_blocks=6, block_size=4, budget=64), FakeRunner(6, 4)
    old, new = seq(range(1, 9), max_new=12), seq(range(30, 38), max_new=12)
    sched.add(old)
    sched.add(new)
    preempted = []
    for _ in range(40):
        out, batch = run_step(sched, runner)
        preempted += out.preempted
        if preempted and new.slot >= 0:
            break
    assert preempted == [new] and new.num_preemptions == 1
    # Back in the running queue: a slot again, and its whole table sent from column 0.
    assert new.slot in batch.slots
    sent = [(col, block) for slot, col, block in writes(batch) if slot == new.slot]
    assert sent == list(enumerate(new.block_ids))


def test_a_prefix_cache_hit_sends_the_shared_blocks_too():
    sched, runner = make(block_size=4), FakeRunner(64, 4)
    first = seq(range(1, 11), max_new=1, cached=True)
    sched.add(first)
    while sched.has_work:
        run_step(sched, runner)
    again = seq(range(1, 11), max_new=3, cached=True)
    sched.add(again)
    _, batch = run_step(sched, runner)
    assert again.num_cached == 8 and batch.q_lens == [2]
    assert writes(batch) == [(again.slot, j, b) for j, b in enumerate(again.block_ids)]


def test_a_step_that_failed_sends_its_new_blocks_again():
    sched, runner = make(block_size=4), FakeRunner(64, 4)
    a = seq(range(1, 5), max_new=20)
    sched.add(a)
    out, first = run_step(sched, runner, update=False)  # the runner raised: no update
    assert a.num_slot_blocks == 0
    # The engine sends a failed step's sequences back to the queue; here the same step simply
    # runs again, and its blocks go out again (writing them twice is harmless).
    again = sched.build_batch(out)
    assert writes(again) == writes(first)
    sched.update(out)
    assert a.num_slot_blocks == 1 and writes(sched.build_batch(SchedulerOutput())) == []
