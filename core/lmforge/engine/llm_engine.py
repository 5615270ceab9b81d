"""The synchronous engine: requests in, one scheduler step at a time, outputs to each request's sink.

A step is schedule → launch (forward and sampling) → collect; the step's tokens go to the
:class:`OutputProcessor`, the one place where stops, finishing and delivery happen. On a GPU the
next step is planned and queued before the running step's tokens are read (the runner takes them
from the device), and those tokens are processed while the new step runs. Everything here runs
in one thread (the engine loop's); the front ends in ``async_engine`` talk to it through
commands.

A step that raises does not take the batch down: its sequences go back to the queue and run
alone, one per step, until each either completes a step (it was a bystander) or fails alone
(its request ends with an error); the engine stays up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import torch

from ..errors import ConfigError, EngineDeadError, PromptTooLongError
from ..messages import GenerationConfig
from .output_processor import EngineCounters, OutputProcessor
from .request import Request
from .sampler import Sampler, SamplerOutput
from .sampling_batch import SamplingBatch, reads_output_tokens
from .sampling_slots import SlotSampling
from .scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from .sequence import Sequence
from .step_trace import StepTrace

logger = logging.getLogger(__name__)

__all__ = ["EngineCounters", "LLMEngine"]


@dataclass
class _InFlight:
    """A launched step: the sequences that sample a token, where that token goes in each one's
    ``output_ids``, and the device-side result."""

    seqs: list[Sequence]
    positions: list[int]
    sampled: SamplerOutput

    def rows(self) -> dict[int, int]:
        return {seq.seq_id: row for row, seq in enumerate(self.seqs)}


@dataclass
class _Queued:
    """A step whose forward is queued and whose sampling is not yet."""

    seqs: list[Sequence]
    logits: torch.Tensor
    sampling: SamplingBatch

    @property
    def constrained(self) -> bool:
        return self.sampling.grammar is not None


class LLMEngine:
    """Owns the scheduler, the model runner, the sampler and the output processor of one model."""

    def __init__(self, runner, tokenizer, scheduler_config: SchedulerConfig, session_len: int,
                 eos_token_ids: list[int], vocab_size: int):
        self.runner = runner
        self.tokenizer = tokenizer
        self.scheduler = Scheduler(scheduler_config)
        self.sampler = Sampler()
        # Each running sequence's sampling parameters, kept on the device by batch slot.
        self.sampling = SlotSampling(vocab_size, runner.device, eos_token_ids, tokenizer)
        self.session_len = session_len
        self.eos_token_ids = list(eos_token_ids)
        self.vocab_size = vocab_size
        self.counters = EngineCounters()
        self.outputs = OutputProcessor(self.scheduler, tokenizer, self.eos_token_ids,
                                       session_len, self.counters)
        self._inflight: _InFlight | None = None
        self.dead: str | None = None  # why the runner stopped for good, once it has
        # Queue each step before reading the previous step's tokens (the runner then takes
        # them from the device); a runner that computes synchronously gains nothing from it.
        self.queue_ahead = bool(getattr(runner, "accepts_prev_tokens", False))
        self.trace = StepTrace.from_env()  # None unless LMFORGE_STEP_TRACE names a file

    # ------------------------------------------------------------------ requests

    def check_prompt(self, prompt_ids: list[int]) -> None:
        """Reject a prompt that can never run, before it takes any resource."""
        if not prompt_ids:
            raise PromptTooLongError("The prompt is empty; send at least one token.")
        bad = next((t for t in prompt_ids
                    if not isinstance(t, int) or not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise ConfigError(
                f"Invalid value for prompt: token id {bad!r} is outside the vocabulary "
                f"(0 to {self.vocab_size - 1})."
            )
        limit = min(self.session_len, self.scheduler.max_tokens_capacity)
        if len(prompt_ids) >= limit:
            raise PromptTooLongError(
                f"The prompt has {len(prompt_ids)} tokens but the session length is {limit}; "
                "shorten the prompt or raise session_len."
            )

    def add_request(self, request: Request) -> None:
        if self.dead is not None:
            raise EngineDeadError(self.dead)
        self.check_prompt(request.prompt_ids)
        for seq in self.outputs.add(request):
            self.scheduler.add(seq)
        if self.trace is not None:
            self.trace.added(len(request.prompt_ids))

    def abort_request(self, request_id: int) -> None:
        self.outputs.abort(request_id)

    def abort_all(self, reason: str = "abort", error: str | None = None) -> None:
        self._inflight = None
        self.outputs.abort_all(reason, error)

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work or self._inflight is not None

    # ------------------------------------------------------------------ the step

    @torch.inference_mode()
    def step(self) -> None:
        """Plan and queue the next step while the current one runs on the device.

        Each sequence in flight holds a placeholder for the token being sampled, so the next
        step is scheduled, built and queued before that token is known: the runner reads it
        from the device. Only then does the engine wait for the running step's tokens and hand
        them to the output processor, while the new step runs. A sequence whose pending token
        is its last (its length limit) is left out of the next step; one that stops on its
        token (EOS, a stop token or word) has one more token computed, which is dropped. When
        the runner cannot read pending tokens, a sequence's sampling reads its earlier tokens
        (penalties), or the scheduler is isolating a failed step's sequences, the running
        step's tokens are processed first, so nothing is computed past a stop. A runner that
        computes synchronously (on a CPU) has its tokens handed out at the end of their own
        step, instead of after the next step's forward.
        """
        if self.trace is None:
            self._step()
            return
        start = time.perf_counter()
        self._step()
        self.trace.stepped(start, self.scheduler.num_running, self.scheduler.num_waiting)

    def _step(self) -> None:
        output = self.scheduler.schedule()
        if self.trace is not None:
            self.trace.planned(output.num_new_tokens)
        self.counters.preemptions_total += len(output.preempted)
        prev, self._inflight = self._inflight, None
        try:
            if prev is not None and not self._may_overlap(output):
                self._collect(prev)
                prev = None
            if prev is None:
                self.outputs.finished_by_scheduler(output.finished)
            output = self._runnable(output)
            queued = self._forward(output, prev) if output.seqs else None
            if queued is None and output.seqs:  # a prefill chunk that samples nothing: done
                self.scheduler.cleared(output.seqs)
            # A grammar's mask needs every token before, so a step with constrained rows
            # samples once the running step's tokens are in; its forward is queued already.
            deferred = queued is not None and prev is not None and queued.constrained
            if queued is not None and not deferred:
                self._inflight = self._sample(queued)
            if prev is not None:
                collected, prev = prev, None
                self._collect(collected)
                self.outputs.finished_by_scheduler(output.finished)
            if deferred:
                self._inflight = self._sample(queued)
            if not self.queue_ahead and self._inflight is not None:
                # A synchronous runner's tokens are on the host already: out with them now, not
                # after the next step's forward.
                collected, self._inflight = self._inflight, None
                self._collect(collected)
        except Exception as exc:
            self._contain(exc, output, prev)

    def _may_overlap(self, output: SchedulerOutput) -> bool:
        """Whether this step may be queued before the previous step's tokens are read."""
        return (self.queue_ahead and not self.scheduler.isolating
                and not any(reads_output_tokens(s) for s in output.seqs))

    def _runnable(self, output: SchedulerOutput) -> SchedulerOutput:
        """``output`` without the sequences that stopped, or whose pending token is their last."""
        keep = [(s, n) for s, n in zip(output.seqs, output.num_new_tokens, strict=True)
                if not (s.is_finished or (s.num_pending_tokens
                                          and self.outputs.at_limit(s, s.num_tokens)))]
        if len(keep) == len(output.seqs):
            return output
        return replace(output, seqs=[s for s, _ in keep], num_new_tokens=[n for _, n in keep])

    def _forward(self, output: SchedulerOutput, prev: _InFlight | None) -> _Queued | None:
        """Queue one step's forward on the device (no wait); None when no row samples."""
        batch = self.scheduler.build_batch(output)
        if prev is not None:
            rows = prev.rows()
            batch.prev_tokens = prev.sampled.token_ids
            batch.prev_rows = [rows[s.seq_id] if s.num_pending_tokens else -1
                               for s in output.seqs]
        sample_seqs = [s for s, need in zip(output.seqs, batch.need_logits, strict=True) if need]
        # Sampling inputs go to the device before the forward is queued, so the step's work is
        # queued back to back.
        sampling = None
        if sample_seqs:
            sampling = self.sampling.batch(sample_seqs)
        logits = self.runner.execute(batch)
        self.scheduler.update(output)
        self.counters.steps_total += 1
        if not sample_seqs:
            return None
        return _Queued(sample_seqs, logits, sampling)

    def _sample(self, queued: _Queued) -> _InFlight:
        """Queue the sampling of a forwarded step (grammar masks are filled now); no wait."""
        sampled = self.sampler.sample(queued.logits, queued.sampling, inplace=True)
        sampled.start_copy()
        # A sequence that stopped on the running step's token (a deferred sample) gets no
        # placeholder: its token here is computed past its stop and dropped.
        positions = [len(seq.output_ids) if seq.is_finished else seq.append_placeholder()
                     for seq in queued.seqs]
        return _InFlight(queued.seqs, positions, sampled)

    def _collect(self, inflight: _InFlight) -> None:
        """Wait for a launched step's tokens and hand them to the output processor."""
        token_ids = inflight.sampled.host_token_ids()
        self.scheduler.cleared(inflight.seqs)
        self.outputs.process(inflight.seqs, inflight.positions, token_ids,
                             inflight.sampled.logprobs)

    def _contain(self, exc: Exception, output: SchedulerOutput, prev: _InFlight | None) -> None:
        """A step raised: its sequences (and those of the step before, whose tokens are lost
        with it) go back to the queue to run alone; one that fails alone ends with an error.
        When the runner itself is gone (a tensor-parallel worker died), every request ends with
        its sentence and the engine takes no more."""
        self.counters.failed_steps_total += 1
        if isinstance(exc, EngineDeadError):
            self.dead = str(exc)
            logger.error("%s", self.dead)
            self.abort_all("error", self.dead)
            return
        failed = {s.seq_id: s for s in output.seqs}
        for inflight in (prev, self._inflight):
            if inflight is not None:
                failed.update((s.seq_id, s) for s in inflight.seqs)
        self._inflight = None
        alone = len(failed) == 1 and self.scheduler.isolating
        message = f"{type(exc).__name__}: {exc}"
        logger.warning("a step of %d sequences failed (%s)%s", len(failed), message,
                       "" if alone else "; running them one at a time")
        for seq in failed.values():
            seq.truncate_output(len(seq.output_ids) - seq.num_pending_tokens)
            if not self.outputs.owns(seq):
                continue
            if alone:
                logger.exception("a request's step failed on its own: it ends with an error",
                                 exc_info=exc)
                request = self.outputs.request_of(seq)
                self.outputs.abort(request.request_id, "error", message)
            else:
                self.scheduler.isolate(seq)
        self.outputs.finished_by_scheduler(output.finished)

    # ------------------------------------------------------------------ perplexity

    @torch.inference_mode()
    def score(self, token_ids: list[int]) -> float:
        """Mean negative log-likelihood of ``token_ids[1:]`` given their prefixes.

        Runs in prefill chunks of at most ``max_step_tokens`` tokens through the paged cache,
        so inputs longer than one step's budget work; the blocks are freed afterwards.
        """
        if len(token_ids) < 2:
            raise PromptTooLongError("Perplexity needs at least two tokens.")
        self.check_prompt(token_ids[:-1])
        seq = Sequence(list(token_ids), GenerationConfig(max_new_tokens=0))
        chunk = self.scheduler.config.max_step_tokens
        total, count = 0.0, 0
        try:
            while seq.num_computed < len(token_ids):
                n = min(chunk, len(token_ids) - seq.num_computed)
                batch = self.scheduler.build_scoring_batch(seq, n)
                logits = self.runner.execute(batch)
                start = seq.num_computed
                self.scheduler.advance_scoring(seq, n)
                targets = torch.tensor(token_ids[start + 1 : start + n + 1], device=logits.device)
                logp = torch.log_softmax(logits[: len(targets)].float(), dim=-1)
                total -= logp.gather(1, targets[:, None]).sum().item()
                count += len(targets)
        finally:
            self.scheduler.release_scoring(seq)
        return total / count

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict:
        bm = self.scheduler.block_manager
        c = self.counters
        return {
            "num_running": self.scheduler.num_running,
            "num_waiting": self.scheduler.num_waiting,
            "kv_blocks_used": bm.num_used_blocks,
            "kv_blocks_total": bm.num_blocks,
            "kv_tokens_total": bm.num_blocks * bm.block_size,
            "requests_total": c.requests_total,
            "prompt_tokens_total": c.prompt_tokens_total,
            "generation_tokens_total": c.generation_tokens_total,
            "prefix_cache_hit_tokens": c.prefix_cache_hit_tokens,
            "steps_total": c.steps_total,
            "preemptions_total": c.preemptions_total,
            "failed_steps_total": c.failed_steps_total,
        }
