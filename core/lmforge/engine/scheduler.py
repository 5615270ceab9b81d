"""Continuous batching: which sequences run in the next step, and how many of their tokens.

One engine step is ``schedule()`` → ``build_batch()`` → runner → ``update()``; the engine then
samples, appends tokens and calls ``finish()`` for the sequences that stopped. The scheduler is
bookkeeping only (no tensors), so it is tested without a model.

Policy, per step: a budget of ``max_step_tokens`` tokens (LMDeploy's ``max_prefill_token_num``) (a decode costs 1) and at most
``max_batch_size`` sequences. Running decodes go first (their latency is what users feel), then
running sequences part-way through a chunked prefill, then waiting sequences in arrival order. A
prompt longer than what is left of the budget runs in chunks over several steps, next to the
decodes. When a running sequence needs a block and none is free, the newest running sequence is
preempted by recompute: its blocks go back to the pool (its full blocks stay in the prefix cache)
and it waits at the head of the queue, ahead of every newer request. An older sequence is never
preempted for a newer one, so the oldest always progresses and nothing livelocks; a sequence
that holds the whole pool and still needs more is finished with reason ``"length"``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from ..errors import ConfigError, LmforgeError, PromptTooLongError
from .batch import ForwardBatch
from .block_manager import BlockManager
from .sequence import Sequence, SequenceStatus
from .slots import BatchSlots, add_new_blocks


@dataclass
class SchedulerConfig:
    """Limits of the scheduler; the engine fills them from its engine config and the pool size.

    ``watermark`` is the fraction of blocks kept free when admitting a waiting sequence next to
    running ones, so their decodes do not have to preempt at once.

    ``prefill_interval`` (LMDeploy's name): while a nearly full batch decodes (more than three
    quarters of ``max_batch_size`` running), waiting sequences are admitted at most once every
    that many steps. A few freed slots then fill in groups, and most steps are pure decodes,
    which an engine can replay as CUDA graphs; a batch with room (a burst being admitted, or a
    lightly loaded server) still admits at once, so first-token latency does not suffer.
    1 admits every step.
    """

    max_batch_size: int
    max_step_tokens: int
    block_size: int
    num_blocks: int
    max_session_len: int | None = None
    watermark: float = 0.01
    prefill_interval: int = 1

    def __post_init__(self) -> None:
        if self.num_blocks < 1:
            raise ConfigError(
                "No K/V cache block fits in device memory; raise cache_max_entry_count or use a "
                "smaller model."
            )
        for name in ("max_batch_size", "max_step_tokens", "block_size", "prefill_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"Invalid value for {name}: {getattr(self, name)!r}; must be >= 1")
        if self.max_session_len is not None and self.max_session_len < 2:
            raise ConfigError(f"Invalid value for session_len: {self.max_session_len!r}; must be >= 2")
        if not 0.0 <= self.watermark < 1.0:
            raise ConfigError(f"Invalid value for watermark: {self.watermark!r}; must be in [0, 1)")


@dataclass
class SchedulerOutput:
    """One step's plan: ``seqs[i]`` computes its next ``num_new_tokens[i]`` tokens.

    ``finished`` lists sequences the scheduler ended this step (reason ``"length"``: the session
    length or the whole cache is used up); the engine sends their last output. ``preempted``
    lists sequences sent back to the queue, for metrics.
    """

    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    finished: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    @property
    def is_empty(self) -> bool:
        return not self.seqs


class Scheduler:
    """Owns the waiting and running queues and the :class:`BlockManager`.

    Call :meth:`add`, :meth:`abort` and :meth:`finish` between steps, not between
    :meth:`schedule` and :meth:`update` of a step whose batch is still running.
    """

    def __init__(self, config: SchedulerConfig):
        self.config = config
        self.block_manager = BlockManager(config.num_blocks, config.block_size)
        self.slots = BatchSlots()
        # Both queues stay sorted by Sequence.priority (arrival order).
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self._watermark_blocks = math.ceil(config.num_blocks * config.watermark)
        self._by_id: dict[int, Sequence] = {}
        self._steps_since_admission = 0
        # Sequences of a step that failed: each runs alone until one of its steps completes.
        self._isolated: set[int] = set()

    # ------------------------------------------------------------------ queues

    @property
    def max_tokens_capacity(self) -> int:
        """The most tokens one sequence can hold: the whole K/V pool."""
        return self.config.num_blocks * self.config.block_size

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def add(self, seq: Sequence) -> None:
        """Queue a new sequence; raises :class:`PromptTooLongError` if it can never run."""
        limit = self.max_tokens_capacity
        if self.config.max_session_len is not None:
            limit = min(limit, self.config.max_session_len - 1)
        if seq.num_tokens > limit:
            raise PromptTooLongError(
                f"The prompt has {seq.num_tokens} tokens but at most {limit} fit; shorten it or "
                "raise session_len or cache_max_entry_count."
            )
        seq.status = SequenceStatus.WAITING
        bisect.insort(self.waiting, seq, key=_priority)
        self._by_id[seq.seq_id] = seq

    def abort(self, seq_id: int) -> Sequence | None:
        """Finish a queued or running sequence with reason ``"abort"`` and free its blocks at
        once; returns it, or None if it is not known (already finished)."""
        seq = self._by_id.get(seq_id)
        if seq is not None:
            self.finish(seq, "abort")
        return seq

    def finish(self, seq: Sequence, reason: str) -> None:
        """Mark a sequence finished and free its blocks; repeated calls do nothing."""
        if self._by_id.pop(seq.seq_id, None) is None:
            return
        self._isolated.discard(seq.seq_id)
        queue = self.running if seq.status is SequenceStatus.RUNNING else self.waiting
        queue.remove(seq)
        self._free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason

    # ------------------------------------------------------------------ failed steps

    @property
    def isolating(self) -> bool:
        """Whether sequences of a failed step are being run one at a time."""
        return bool(self._isolated)

    def isolate(self, seq: Sequence) -> None:
        """Send a sequence of a failed step back to the queue (its blocks freed, as a
        preemption does) to run alone until one of its steps completes."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
            self._free(seq)
            seq.status = SequenceStatus.WAITING
            bisect.insort(self.waiting, seq, key=_priority)
        self._isolated.add(seq.seq_id)

    def cleared(self, seqs: list[Sequence]) -> None:
        """These sequences completed a step: they may share steps again."""
        for seq in seqs:
            self._isolated.discard(seq.seq_id)

    def _schedule_isolated(self) -> SchedulerOutput:
        """A step of the oldest isolated sequence alone."""
        step = _Step(self.config.max_step_tokens)
        seq = min((s for s in self.running + self.waiting if s.seq_id in self._isolated),
                  key=_priority)
        if seq.status is SequenceStatus.RUNNING:
            self._schedule_running(seq, step)
        elif self._over_session_len(seq):
            self._finish_length(seq, step)
        else:
            n = min(seq.num_tokens - self.block_manager.match(seq), step.budget)
            if self.block_manager.can_allocate(seq, n):
                self.block_manager.allocate(seq, n)
                self.waiting.remove(seq)
                self._start(seq)
                step.add(seq, n)
        return step.output()

    # ------------------------------------------------------------------ the step

    def schedule(self) -> SchedulerOutput:
        """Pick this step's sequences and their token counts, allocating their blocks."""
        if self._isolated:
            return self._schedule_isolated()
        step = _Step(self.config.max_step_tokens)
        running = list(self.running)
        # Decodes first, then partial prefills; each group oldest first.
        for seq in [s for s in running if s.num_uncomputed == 1] + [
            s for s in running if s.num_uncomputed > 1
        ]:
            if step.budget == 0 or len(step.scheduled) == self.config.max_batch_size:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted by an older one this step
                continue
            if self._over_session_len(seq):
                self._finish_length(seq, step)
                continue
            self._schedule_running(seq, step)
        # Under block pressure, admitting new work would only preempt it again.
        if not step.preempted and self._may_admit():
            busy = self._busy()
            decodes = [seq for seq, n in step.scheduled.items() if n == 1]
            before = len(step.scheduled)
            budget_before = step.budget
            self._admit_waiting(step)
            admitted = len(step.scheduled) - before
            self._steps_since_admission = 0 if admitted else self._steps_since_admission + 1
            # A burst (several new prompts, half a step's budget or more) into a batch with room
            # runs alone: the running decodes wait one step (the prompts' compute sets the step's
            # length either way), and the burst then decodes in step with them instead of
            # trailing them to the end by a few steps.
            burst = (admitted >= 2 and 2 * (budget_before - step.budget)
                     >= self.config.max_step_tokens)
            if burst and not busy:
                for seq in decodes:
                    step.remove(seq)
        else:
            self._steps_since_admission += 1
        return step.output()

    def _busy(self) -> bool:
        return len(self.running) > self.config.max_batch_size * 3 // 4

    def _may_admit(self) -> bool:
        return (not self._busy() or self.config.prefill_interval <= 1
                or self._steps_since_admission + 1 >= self.config.prefill_interval)

    def _over_session_len(self, seq: Sequence) -> bool:
        limit = self.config.max_session_len
        return limit is not None and seq.num_tokens >= limit

    def _schedule_running(self, seq: Sequence, step: _Step) -> None:
        bm = self.block_manager
        want = min(seq.num_uncomputed, step.budget)
        if want == 1 and seq.num_computed < len(seq.block_ids) * self.config.block_size:
            step.add(seq, 1)  # a decode whose slot its last block already has
            return
        while True:
            n = min(want, bm.num_allocatable_tokens(seq))
            # A prefill chunk may shrink to what fits; a decode token cannot.
            if n > 0:
                bm.allocate(seq, n)
                step.add(seq, n)
                return
            victim = self.running[-1]
            if victim is not seq:
                self._preempt(victim, step)
            elif len(self.running) == 1:
                # It holds the whole pool and needs more: it can never continue.
                self._finish_length(seq, step)
                return
            else:
                self._preempt(seq, step)
                return

    def _admit_waiting(self, step: _Step) -> None:
        bm = self.block_manager
        while self.waiting and step.budget > 0 and len(self.running) < self.config.max_batch_size:
            seq = self.waiting[0]
            if self._over_session_len(seq) or seq.num_tokens > self.max_tokens_capacity:
                self._finish_length(seq, step)
                continue
            n = min(seq.num_tokens - bm.match(seq), step.budget)
            reserve = self._watermark_blocks if self.running else 0
            if not bm.can_allocate(seq, n, reserve):
                break  # first come, first served: nobody overtakes the head of the queue
            bm.allocate(seq, n)
            self.waiting.pop(0)
            self._start(seq)
            step.add(seq, n)

    def _start(self, seq: Sequence) -> None:
        """A waiting sequence whose blocks are allocated joins the running queue."""
        seq.status = SequenceStatus.RUNNING
        bisect.insort(self.running, seq, key=_priority)
        self.slots.take(seq)

    def _free(self, seq: Sequence) -> None:
        """Return a sequence's blocks and batch slot."""
        self.block_manager.free(seq)
        self.slots.release(seq)

    def _preempt(self, seq: Sequence, step: _Step) -> None:
        step.remove(seq)
        self.running.remove(seq)
        self._free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        bisect.insort(self.waiting, seq, key=_priority)
        step.preempted.append(seq)

    def _finish_length(self, seq: Sequence, step: _Step) -> None:
        step.remove(seq)
        self.finish(seq, "length")
        step.finished.append(seq)

    def build_batch(self, output: SchedulerOutput) -> ForwardBatch:
        """The runner's input for a scheduled step. The block tables are the sequences' own
        lists, not copies; only the blocks a slot does not hold yet are listed again."""
        batch = ForwardBatch(input_ids=[], q_lens=list(output.num_new_tokens), kv_lens=[],
                             block_tables=[], need_logits=[], block_size=self.config.block_size)
        input_ids, kv_lens, need_logits = batch.input_ids, batch.kv_lens, batch.need_logits
        tables, slots = batch.block_tables, batch.slots
        for seq, n in zip(output.seqs, output.num_new_tokens, strict=True):
            end = seq.num_computed + n
            input_ids.extend(seq.token_slice(seq.num_computed, end))
            kv_lens.append(end)
            need_logits.append(end == seq.num_tokens)
            tables.append(seq.block_ids)
            slots.append(seq.slot)
            if seq.num_slot_blocks < len(seq.block_ids):
                add_new_blocks(batch, seq)
        batch.adapters = [seq.adapter for seq in output.seqs]
        return batch

    def update(self, output: SchedulerOutput) -> None:
        """After the runner ran the step: advance ``num_computed``, note that the slots hold
        the sequences' blocks, and register the newly full blocks in the prefix cache.
        Sequences finished meanwhile are skipped."""
        for seq, n in zip(output.seqs, output.num_new_tokens, strict=True):
            if seq.status is SequenceStatus.RUNNING:
                seq.num_computed += n
                seq.num_slot_blocks = len(seq.block_ids)
                self.block_manager.commit(seq)

    # ------------------------------------------------------------------ scoring

    def build_scoring_batch(self, seq: Sequence, num_new_tokens: int) -> ForwardBatch:
        """A batch of the next ``num_new_tokens`` tokens of a sequence outside the queues, with
        logits for every token (perplexity). The prefix cache is bypassed, since every token's
        logits are needed."""
        seq.allow_prefix_match = False
        if not self.block_manager.can_allocate(seq, num_new_tokens):
            raise LmforgeError(
                f"The K/V cache has no room for {num_new_tokens} more tokens to score; retry with "
                "fewer requests running or raise cache_max_entry_count."
            )
        self.block_manager.allocate(seq, num_new_tokens)
        end = seq.num_computed + num_new_tokens
        return ForwardBatch(
            input_ids=seq.token_slice(seq.num_computed, end),
            q_lens=[num_new_tokens],
            kv_lens=[end],
            block_tables=[list(seq.block_ids)],
            need_logits=[True],
            block_size=self.config.block_size,
            return_all_logits=True,
            adapters=[seq.adapter],
        )

    def advance_scoring(self, seq: Sequence, num_new_tokens: int) -> None:
        """Record that the scoring batch ran."""
        seq.num_computed += num_new_tokens

    def release_scoring(self, seq: Sequence) -> None:
        """Free a scored sequence's blocks."""
        self.block_manager.free(seq)


def _priority(seq: Sequence) -> tuple[float, int]:
    return seq.priority


class _Step:
    """The plan being built by one :meth:`Scheduler.schedule` call."""

    def __init__(self, budget: int):
        self.budget = budget
        self.scheduled: dict[Sequence, int] = {}
        self.preempted: list[Sequence] = []
        self.finished: list[Sequence] = []

    def add(self, seq: Sequence, n: int) -> None:
        self.scheduled[seq] = n
        self.budget -= n

    def remove(self, seq: Sequence) -> None:
        self.budget += self.scheduled.pop(seq, 0)

    def output(self) -> SchedulerOutput:
        return SchedulerOutput(
            seqs=list(self.scheduled),
            num_new_tokens=list(self.scheduled.values()),
            preempted=self.preempted,
            finished=self.finished,
        )
