"""Scheduler: budgets, chunked prefill, preemption, fairness, and no leaked blocks.

A fake runner keeps a real paged cache of token ids: it writes each new token into the slot its
block table names and derives the next token from the whole context read back through the
table. A wrong block table, a stale prefix-cache hit or a bad resume after preemption therefore
changes the generated tokens, which are compared with each sequence run alone.
"""

from __future__ import annotations

import random

import pytest
from lmforge.engine.batch import ForwardBatch
from lmforge.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from lmforge.engine.sequence import Sequence, SequenceStatus
from lmforge.errors import ConfigError, PromptTooLongError
from lmforge.messages import GenerationConfig

VOCAB = 1000


class FakeRunner:
    """Stores token ids as 'K/V' in paged blocks; the next token is a hash of the context.

    Like a runner with device-resident tables, it keeps a block table per batch slot, updated
    only by each step's new blocks, and reads the blocks from there: a wrong update changes the
    tokens (and is caught at once against the batch's own tables)."""

    def __init__(self, num_blocks: int, block_size: int):
        self.cache = [[None] * block_size for _ in range(num_blocks)]
        self.slot_tables: dict[int, dict[int, int]] = {}

    def _tables(self, batch: ForwardBatch) -> list[list[int]]:
        if not batch.slots:
            return batch.block_tables
        for slot, col, block in zip(batch.new_block_slots, batch.new_block_cols,
                                    batch.new_block_ids, strict=True):
            self.slot_tables.setdefault(slot, {})[col] = block
        tables = []
        for slot, kv in zip(batch.slots, batch.kv_lens, strict=True):
            row = self.slot_tables[slot]
            tables.append([row[j] for j in range(-(-kv // batch.block_size))])
        assert tables == batch.block_tables
        return tables

    def execute(self, batch: ForwardBatch) -> list[int]:
        bs = batch.block_size
        next_tokens = []
        tables = self._tables(batch)
        for i in range(batch.num_seqs):
            q, kv, table = batch.q_lens[i], batch.kv_lens[i], tables[i]
            new = batch.input_ids[batch.q_start[i] : batch.q_start[i] + q]
            for pos, tok in zip(range(kv - q, kv), new, strict=True):
                self.cache[table[pos // bs]][pos % bs] = tok
            if batch.need_logits[i]:
                context = [self.cache[table[p // bs]][p % bs] for p in range(kv)]
                next_tokens.append(hash(tuple(context)) % VOCAB)
        return next_tokens


def make(num_blocks=64, block_size=4, budget=64, batch=8, session_len=None,
         watermark=0.0) -> Scheduler:
    return Scheduler(SchedulerConfig(
        max_batch_size=batch, max_step_tokens=budget, block_size=block_size,
        num_blocks=num_blocks, max_session_len=session_len, watermark=watermark,
    ))


def seq(prompt, max_new=4, cached=False, **kw) -> Sequence:
    """A sequence; ``cached`` lets it reuse K/V from the prefix cache."""
    return Sequence(list(prompt), GenerationConfig(max_new_tokens=max_new),
                    allow_prefix_match=cached, **kw)


def check_invariants(sched: Scheduler, out: SchedulerOutput | None = None) -> None:
    bm, cfg = sched.block_manager, sched.config
    holders = [0] * cfg.num_blocks
    for s in sched.running:
        assert s.status is SequenceStatus.RUNNING
        for b in s.block_ids:
            holders[b] += 1
    for s in sched.waiting:
        assert s.status is SequenceStatus.WAITING and s.block_ids == [] and s.num_computed == 0
    assert [bm.ref_count(b) for b in range(cfg.num_blocks)] == holders
    assert bm.num_used_blocks == sum(1 for h in holders if h)
    assert sched.running == sorted(sched.running, key=lambda s: s.priority)
    assert sched.waiting == sorted(sched.waiting, key=lambda s: s.priority)
    assert len(sched.running) <= cfg.max_batch_size
    # Every running sequence holds its own batch slot, below the batch size; no one else does.
    slots = [s.slot for s in sched.running]
    assert len(set(slots)) == len(slots) == sched.slots.num_taken
    assert all(0 <= slot < cfg.max_batch_size for slot in slots)
    assert all(s.slot == -1 and s.num_slot_blocks == 0 for s in sched.waiting)
    if out is not None:
        assert out.num_tokens <= cfg.max_step_tokens
        assert len(out.seqs) <= cfg.max_batch_size and len(set(out.seqs)) == len(out.seqs)
        for s, n in zip(out.seqs, out.num_new_tokens, strict=True):
            assert 1 <= n <= s.num_uncomputed
            assert len(s.block_ids) == bm.num_blocks_for(s.num_computed + n)


def step(sched: Scheduler, runner: FakeRunner) -> SchedulerOutput:
    """One engine step: schedule, run, update, append sampled tokens, stop at max_new_tokens."""
    waiting_before = set(sched.waiting)
    out = sched.schedule()
    check_invariants(sched, out)
    # A step that had to preempt admits nobody: the pool is short.
    assert not (out.preempted and waiting_before & set(out.seqs))
    assert all(s.finish_reason == "length" and s.block_ids == [] for s in out.finished)
    if out.is_empty:
        return out
    batch = sched.build_batch(out)
    tokens = runner.execute(batch)
    sched.update(out)
    accept_tokens(sched, out, batch, tokens)
    return out


def accept_tokens(sched: Scheduler, out: SchedulerOutput, batch, tokens) -> None:
    """Append each sampling row's token to its sequence; finish those at max_new_tokens."""
    tokens = iter(tokens)
    for s, need in zip(out.seqs, batch.need_logits, strict=True):
        if need:
            s.append_token(next(tokens))
            if len(s.output_ids) >= s.gen_config.max_new_tokens:
                sched.finish(s, "length")


def run_all(sched: Scheduler, runner: FakeRunner | None = None,
            max_steps=10_000) -> list[SchedulerOutput]:
    runner = runner or FakeRunner(sched.config.num_blocks, sched.config.block_size)
    outs = []
    while sched.has_work:
        outs.append(step(sched, runner))
        assert len(outs) < max_steps, "no progress"
    return outs


def reference_output(prompt, max_new, adapter=None) -> list[int]:
    s = seq(prompt, max_new, adapter=adapter)
    sched = make(num_blocks=256)
    sched.add(s)
    run_all(sched)
    return s.output_ids


def assert_all_free(sched: Scheduler) -> None:
    bm = sched.block_manager
    assert not sched.has_work
    assert bm.num_free_blocks == sched.config.num_blocks and bm.num_used_blocks == 0
    assert all(bm.ref_count(b) == 0 for b in range(sched.config.num_blocks))
    assert bm._num_committed == {}


# ---------------------------------------------------------------------------- budgets and chunks


def test_chunked_prefill_splits_and_needs_logits_only_on_the_last_chunk():
    sched = make(budget=8)
    s = seq(range(1, 21), max_new=3)
    sched.add(s)
    runner = FakeRunner(64, 4)
    batches = []
    while sched.has_work:
        out = sched.schedule()
        batch = sched.build_batch(out)
        batches.append(batch)
        runner_tokens = runner.execute(batch)
        sched.update(out)
        if batch.need_logits[0]:
            s.append_token(runner_tokens[0])
            if len(s.output_ids) == 3:
                sched.finish(s, "length")
    assert [b.q_lens for b in batches] == [[8], [8], [4], [1], [1]]
    assert [b.kv_lens for b in batches] == [[8], [16], [20], [21], [22]]
    assert [b.need_logits for b in batches] == [[False], [False], [True], [True], [True]]
    assert batches[1].input_ids == list(range(9, 17))
    assert batches[3].input_ids == [s.output_ids[0]]
    assert s.output_ids == reference_output(range(1, 21), 3)
    assert_all_free(sched)


def test_decodes_first_then_partial_prefill_then_waiting():
    sched = make(budget=6)
    runner = FakeRunner(64, 4)
    a = seq([1, 2, 3], max_new=10)
    sched.add(a)
    step(sched, runner)  # a prefilled, now decoding
    b, c = seq(range(10, 20)), seq([7, 7])
    sched.add(b)
    sched.add(c)
    out = step(sched, runner)
    assert out.seqs == [a, b] and out.num_new_tokens == [1, 5]  # b chunked next to a's decode
    out = step(sched, runner)
    assert out.seqs == [a, b] and out.num_new_tokens == [1, 5]  # no budget left for c
    out = step(sched, runner)
    assert out.seqs == [a, b, c] and out.num_new_tokens == [1, 1, 2]


def test_decode_tokens_count_against_the_budget():
    sched = make(budget=3, batch=8)
    runner = FakeRunner(64, 4)
    seqs = [seq([i], max_new=5) for i in range(1, 6)]
    for s in seqs:
        sched.add(s)
    outs = [step(sched, runner) for _ in range(4)]
    assert all(o.num_tokens <= 3 for o in outs)
    # Everyone gets scheduled: the budget rotates nobody out for good.
    run_all(sched, runner)
    assert all(s.output_ids == reference_output([i], 5) for i, s in enumerate(seqs, 1))


def test_max_batch_size_is_respected():
    sched = make(batch=2)
    seqs = [seq([i, i + 1], max_new=3) for i in range(5)]
    for s in seqs:
        sched.add(s)
    outs = run_all(sched)
    assert max(len(o.seqs) for o in outs) == 2
    assert [s.output_ids for s in seqs] == [reference_output([i, i + 1], 3) for i in range(5)]
    assert_all_free(sched)


# ---------------------------------------------------------------------------- fairness


def test_fcfs_head_of_line_is_not_overtaken():
    sched = make(num_blocks=4, block_size=4, budget=64)
    runner = FakeRunner(4, 4)
    first = seq(range(10), max_new=8)  # 3 blocks
    sched.add(first)
    step(sched, runner)
    big, small = seq(range(100, 108)), seq([1])
    sched.add(big)
    sched.add(small)
    out = step(sched, runner)
    # big (2 blocks) does not fit in the one free block; small would, but must wait its turn.
    assert out.seqs == [first] and sched.waiting == [big, small]
    run_all(sched, runner)
    assert_all_free(sched)


def test_admission_keeps_a_watermark_only_next_to_running_sequences():
    sched = make(num_blocks=10, block_size=4, watermark=0.2)  # 2 blocks kept free
    runner = FakeRunner(10, 4)
    a = seq(range(40), max_new=2)  # all 10 blocks: admitted, since nothing else runs
    sched.add(a)
    assert step(sched, runner).seqs == [a]
    sched.finish(a, "abort")
    b = seq(range(14))  # 4 blocks, with room for its next decode token
    sched.add(b)
    step(sched, runner)
    c, d = seq(range(16)), seq(range(8))
    sched.add(c)
    sched.add(d)
    out = step(sched, runner)
    # 6 blocks free: c needs 4 + 2 kept free → admitted; d would leave 0 → waits.
    assert c in out.seqs and d not in out.seqs


# ---------------------------------------------------------------------------- preemption


def test_preemption_recomputes_the_newest_and_resumes_it_first():
    sched = make(num_blocks=6, block_size=4, batch=2)
    runner = FakeRunner(6, 4)
    old, new = seq(range(8), max_new=12), seq(range(50, 58), max_new=12)
    sched.add(old)
    sched.add(new)
    step(sched, runner)  # 2 + 2 blocks, 2 free; each needs 3 more blocks over 12 tokens
    later = seq([9, 9])
    sched.add(later)  # waits: the batch is full
    out = step(sched, runner)
    while not out.preempted:
        out = step(sched, runner)
    assert out.preempted == [new] and new not in out.seqs and old in out.seqs
    assert new.num_preemptions == 1 and sched.num_preemptions == 1
    assert new.block_ids == [] and new.num_computed == 0
    assert sched.waiting == [new, later]  # ahead of the newer request
    while new.status is SequenceStatus.WAITING:
        assert later.status is SequenceStatus.WAITING
        step(sched, runner)
    run_all(sched, runner)
    assert old.output_ids == reference_output(range(8), 12)
    assert new.output_ids == reference_output(range(50, 58), 12)
    assert later.output_ids == reference_output([9, 9], 4)
    assert_all_free(sched)


def test_preempted_sequence_gets_its_blocks_back_from_the_prefix_cache():
    sched = make(num_blocks=6, block_size=4)
    runner = FakeRunner(6, 4)
    old = seq(range(8), max_new=12, cached=True)
    new = seq(range(50, 58), max_new=12, cached=True)
    sched.add(old)
    sched.add(new)
    while not step(sched, runner).preempted:
        pass
    while new.status is SequenceStatus.WAITING:
        step(sched, runner)
    # While new waited, old's growth recycled new's cached blocks tail first: its first block
    # was still there.
    assert new.num_cached == 4
    run_all(sched, runner)
    assert new.output_ids == reference_output(range(50, 58), 12)
    assert old.output_ids == reference_output(range(8), 12)
    assert_all_free(sched)


def test_a_step_that_preempts_admits_nobody():
    # Found by search: without the rule, the preempted sequence's first prefix-cached chunk is
    # admitted again in the very step that preempted it.
    sched = make(num_blocks=7, block_size=2, budget=6, batch=4)
    seqs = [seq(p, max_new=8, cached=True) for p in ([0, 4], [0, 4], [2, 2, 0])]
    for s in seqs:
        sched.add(s)
    outs = run_all(sched)  # step() asserts the rule
    assert sum(len(o.preempted) for o in outs) > 0
    assert [s.output_ids for s in seqs] == [
        reference_output(s.prompt_ids, 8) for s in seqs
    ]


def test_a_sequence_that_fills_the_whole_pool_finishes_with_length():
    sched = make(num_blocks=3, block_size=4)
    s = seq(range(10), max_new=100)
    sched.add(s)
    outs = run_all(sched)
    assert s.finish_reason == "length" and outs[-1].finished == [s]
    assert s.num_tokens == 13  # 12 slots computed, the 13th token sampled and kept
    assert_all_free(sched)


def test_session_len_finishes_with_length_and_long_prompts_are_rejected():
    sched = make(session_len=10)
    with pytest.raises(PromptTooLongError):
        sched.add(seq(range(10)))
    with pytest.raises(PromptTooLongError):
        make(num_blocks=2, block_size=4).add(seq(range(9)))
    s = seq(range(6), max_new=100)
    sched.add(s)
    run_all(sched)
    assert s.finish_reason == "length" and s.num_tokens == 10
    assert_all_free(sched)


# ---------------------------------------------------------------------------- abort and leaks


@pytest.mark.parametrize("when", ["waiting", "mid_chunk", "decode", "preempted", "in_flight"])
def test_abort_frees_blocks_at_any_point(when):
    sched = make(num_blocks=12, block_size=4, budget=4)
    runner = FakeRunner(12, 4)
    other = seq(range(10), max_new=30, cached=True)
    victim = seq(range(100, 110), max_new=30, cached=True)  # the newer one: preempted under pressure
    sched.add(other)
    sched.add(victim)
    conditions = {
        "waiting": lambda: True,
        "mid_chunk": lambda: 0 < victim.num_computed < victim.num_prompt_tokens,
        "decode": lambda: len(victim.output_ids) >= 2,
        "preempted": lambda: victim.num_preemptions > 0 and victim.status is SequenceStatus.WAITING,
        "in_flight": lambda: victim.status is SequenceStatus.RUNNING,
    }
    for _ in range(200):
        if conditions[when]():
            break
        step(sched, runner)
    assert conditions[when]()
    if when == "in_flight":  # aborted while its step runs
        out = sched.schedule()
        assert victim in out.seqs
        batch = sched.build_batch(out)
        tokens = runner.execute(batch)
        assert sched.abort(victim.seq_id) is victim
        sched.update(out)
        assert victim.num_computed == 0
        sampled = [s for s, need in zip(out.seqs, batch.need_logits, strict=True) if need]
        for s, token in zip(sampled, tokens, strict=True):
            if not s.is_finished:
                s.append_token(token)
    else:
        assert sched.abort(victim.seq_id) is victim
    assert victim.finish_reason == "abort" and victim.block_ids == []
    assert sched.abort(victim.seq_id) is None
    check_invariants(sched)
    run_all(sched, runner)
    assert other.output_ids == reference_output(range(10), 30)
    assert_all_free(sched)


def test_prefix_cache_hit_skips_computed_tokens():
    sched = make()
    a = seq(range(10), max_new=2, cached=True)
    sched.add(a)
    run_all(sched)
    b = seq(range(10), max_new=2, cached=True)
    sched.add(b)
    out = sched.schedule()
    assert out.num_new_tokens == [2] and b.num_cached == 8
    assert sched.build_batch(out).kv_lens == [10]
    sched.finish(b, "abort")


def test_scoring_batch_returns_all_logits_and_frees():
    sched = make()
    run_all_seq = seq(range(12), max_new=1, cached=True)
    sched.add(run_all_seq)
    run_all(sched)
    s = Sequence(list(range(12)))
    batch = sched.build_scoring_batch(s, 8)
    assert batch.return_all_logits and batch.input_ids == list(range(8)) and batch.kv_lens == [8]
    sched.advance_scoring(s, 8)
    batch = sched.build_scoring_batch(s, 4)
    assert batch.input_ids == list(range(8, 12)) and batch.kv_lens == [12]
    sched.release_scoring(s)
    assert sched.block_manager.num_used_blocks == 0


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="cache_max_entry_count"):
        make(num_blocks=0)
    with pytest.raises(ConfigError, match="max_batch_size"):
        make(batch=0)


# ---------------------------------------------------------------------------- stress


@pytest.mark.parametrize("seed", range(8))
def test_randomized_stress_keeps_invariants(seed):
    rng = random.Random(seed)
    block_size = rng.choice([1, 2, 4, 8])
    num_blocks = rng.randint(64, 96) // block_size + 8
    sched = make(num_blocks=num_blocks, block_size=block_size, budget=rng.randint(4, 40),
                 batch=rng.randint(1, 8), watermark=rng.choice([0, 0.05]),
                 session_len=rng.choice([None, 64]))
    runner = FakeRunner(num_blocks, block_size)
    prefixes = [[rng.randrange(VOCAB) for _ in range(rng.randint(1, 24))] for _ in range(3)]
    submitted, aborted = [], set()
    for _ in range(400):
        if rng.random() < 0.3 and len(submitted) < 60:
            prompt = rng.choice(prefixes)[: rng.randint(1, 24)] + [
                rng.randrange(VOCAB) for _ in range(rng.randint(0, 30))
            ]
            prompt = prompt[: sched.max_tokens_capacity // 2] or [1]
            s = seq(prompt, max_new=rng.randint(1, 20), adapter=rng.choice([None, None, "x"]),
                    cached=rng.random() < 0.7)
            sched.add(s)
            submitted.append(s)
        live = sched.running + sched.waiting
        if live and rng.random() < 0.05:
            victim = rng.choice(live)
            sched.abort(victim.seq_id)
            aborted.add(victim.seq_id)
        step(sched, runner)
    run_all(sched, runner)
    assert_all_free(sched)
    for s in submitted:
        assert s.is_finished
        if s.seq_id not in aborted and s.finish_reason == "length" and (
            len(s.output_ids) == s.gen_config.max_new_tokens
        ):
            assert s.output_ids == reference_output(s.prompt_ids, len(s.output_ids), s.adapter)



def test_prefill_interval_groups_admissions_only_when_busy():
    sched = Scheduler(SchedulerConfig(
        max_batch_size=8, max_step_tokens=64, block_size=4, num_blocks=256,
        prefill_interval=4,
    ))
    runner = FakeRunner(256, 4)
    busy = [seq(range(1, 4), max_new=100) for _ in range(7)]  # 7 > 3/4 of 8: nearly full
    for s in busy:
        sched.add(s)
    step(sched, runner)
    late = seq(range(10, 13), max_new=2)
    sched.add(late)
    admitted_at = None
    for i in range(1, 6):
        out = step(sched, runner)
        if late in out.seqs and admitted_at is None:
            admitted_at = i
    assert admitted_at == 4  # deferred until 4 steps after the last admission
    assert [s.output_ids for s in busy] == [busy[0].output_ids] * 7
    # A batch with room admits at once: a first token is not held back.
    light = Scheduler(SchedulerConfig(
        max_batch_size=64, max_step_tokens=64, block_size=4, num_blocks=256,
        prefill_interval=16,
    ))
    first = seq(range(1, 4), max_new=100)
    light.add(first)
    step(light, runner)
    newcomer = seq(range(20, 23), max_new=2)
    light.add(newcomer)
    assert newcomer in step(light, runner).seqs
    assert late.output_ids == reference_output(range(10, 13), 2)


def test_a_burst_into_a_batch_with_room_prefills_alone_then_decodes_in_step():
    sched = make(budget=13, batch=8)
    runner = FakeRunner(64, 4)
    a = seq([1, 2, 3], max_new=10)
    sched.add(a)
    step(sched, runner)  # a decodes from now on
    burst = [seq([5 + i] * 4, max_new=3) for i in range(3)]
    for s in burst:
        sched.add(s)
    out = step(sched, runner)  # 12 prompt tokens, 3 sequences: a waits this step
    assert out.seqs == burst and out.num_new_tokens == [4, 4, 4]
    out = step(sched, runner)
    assert out.seqs == [a, *burst] and out.num_new_tokens == [1, 1, 1, 1]
    run_all(sched, runner)
    assert a.output_ids == reference_output([1, 2, 3], 10)


def test_a_burst_into_a_busy_batch_runs_beside_its_decodes():
    sched = make(budget=16, batch=10)
    runner = FakeRunner(64, 4)
    running = [seq([i], max_new=10) for i in range(1, 9)]
    for s in running:
        sched.add(s)
    step(sched, runner)  # 8 of 10 decoding: more than three quarters busy
    burst = [seq([9] * 4, max_new=3), seq([8] * 4, max_new=3)]
    for s in burst:
        sched.add(s)
    out = step(sched, runner)
    assert out.seqs == [*running, *burst] and out.num_new_tokens == [1] * 8 + [4, 4]


def test_isolated_sequences_run_alone_oldest_first_until_cleared():
    sched = make()
    runner = FakeRunner(64, 4)
    seqs = [seq(range(10 * i, 10 * i + 6), max_new=6) for i in range(3)]
    for s in seqs:
        sched.add(s)
    step(sched, runner)  # all three prefill together
    for s in seqs[1:]:
        sched.isolate(s)  # a failed step's sequences: back to the queue, blocks freed
    assert seqs[1].status is SequenceStatus.WAITING and seqs[1].block_ids == []
    check_invariants(sched)
    out = step(sched, runner)
    assert out.seqs == [seqs[1]] and out.num_new_tokens == [seqs[1].num_prompt_tokens + 1]
    assert step(sched, runner).seqs == [seqs[1]]  # still alone until cleared
    sched.cleared(out.seqs)
    out = step(sched, runner)
    assert out.seqs == [seqs[2]]
    sched.cleared(out.seqs)
    assert not sched.isolating
    sched.finish(seqs[2], "abort")
    run_all(sched, runner)
    assert [s.output_ids for s in seqs[:2]] == [reference_output(s.prompt_ids, 6) for s in seqs[:2]]
    assert_all_free(sched)
