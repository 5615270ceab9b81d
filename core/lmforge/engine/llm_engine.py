"""The synchronous engine: requests in, one scheduler step at a time, outputs to each request's sink.

A step is schedule → execute → update, then sampling and stop checks. On a GPU the next step is
planned and queued before the running step's tokens are read (the runner takes them from the
device), and those tokens are detokenized while the new step runs. Everything here
runs in one thread (the engine loop's); the front ends in ``async_engine`` talk to it through
commands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from ..errors import PromptTooLongError
from ..messages import GenerationConfig
from .detokenizer import IncrementalDetokenizer
from .outputs import GenOut
from .request import Request
from .sampler import Sampler, SamplerOutput
from .sampling_batch import SamplingBatch, reads_output_tokens
from .scheduler import Scheduler, SchedulerConfig
from .sequence import Sequence

logger = logging.getLogger(__name__)


@dataclass
class EngineCounters:
    requests_total: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    prefix_cache_hit_tokens: int = 0
    steps_total: int = 0


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
class _Pending:
    """An output whose text is not out yet (see :meth:`LLMEngine.step`); ``token`` None is the
    final output of a sequence the scheduler ended."""

    seq: Sequence
    token: int | None
    logprobs: dict[int, float] | None
    reason: str | None  # a stop the token itself decided
    stop_token: bool  # EOS or a stop token id: its text is not shown
    num_generated: int


class LLMEngine:
    """Owns the scheduler, the model runner and the sampler of one model."""

    def __init__(self, runner, tokenizer, scheduler_config: SchedulerConfig, session_len: int,
                 eos_token_ids: list[int], vocab_size: int):
        self.runner = runner
        self.tokenizer = tokenizer
        self.scheduler = Scheduler(scheduler_config)
        self.sampler = Sampler()
        self.session_len = session_len
        self.eos_token_ids = list(eos_token_ids)
        self.vocab_size = vocab_size
        self.counters = EngineCounters()
        self._requests: dict[int, Request] = {}
        self._seq_owner: dict[int, tuple[Request, int]] = {}
        self._pending: list[_Pending] = []
        self._inflight: _InFlight | None = None
        # Queue each step before reading the previous step's tokens (the runner then takes
        # them from the device); a runner that computes synchronously gains nothing from it.
        self.queue_ahead = bool(getattr(runner, "accepts_prev_tokens", False))

    # ------------------------------------------------------------------ requests

    def check_prompt(self, prompt_ids: list[int]) -> None:
        """Reject a prompt that can never run, before it takes any resource."""
        if not prompt_ids:
            raise PromptTooLongError("The prompt is empty; send at least one token.")
        limit = min(self.session_len, self.scheduler.max_tokens_capacity)
        if len(prompt_ids) >= limit:
            raise PromptTooLongError(
                f"The prompt has {len(prompt_ids)} tokens but the session length is {limit}; "
                "shorten the prompt or raise session_len."
            )

    def add_request(self, request: Request) -> None:
        self.check_prompt(request.prompt_ids)
        cfg = request.gen_config
        self.counters.requests_total += 1
        self.counters.prompt_tokens_total += len(request.prompt_ids)
        for index in range(cfg.n):
            # Seeded choices must differ from each other yet stay reproducible.
            choice_cfg = cfg if cfg.random_seed is None or index == 0 else replace(
                cfg, random_seed=cfg.random_seed + index)
            seq = Sequence(list(request.prompt_ids), choice_cfg, adapter=request.adapter)
            seq.allow_prefix_match = request.allow_prefix_match
            request.seqs.append(seq)
            request.detoks.append(
                IncrementalDetokenizer(
                    self.tokenizer,
                    request.prompt_ids,
                    skip_special_tokens=cfg.skip_special_tokens,
                    stop_words=cfg.stop_words,
                    include_stop_str_in_output=cfg.include_stop_str_in_output,
                )
            )
            self._seq_owner[seq.seq_id] = (request, index)
        request.num_unfinished = cfg.n
        self._requests[request.request_id] = request
        if cfg.max_new_tokens == 0:
            for index, seq in enumerate(request.seqs):
                self._finish(request, index, seq, "length", GenOut("", [], len(seq.prompt_ids), 0))
            return
        for seq in request.seqs:
            self.scheduler.add(seq)

    def abort_request(self, request_id: int) -> None:
        request = self._requests.get(request_id)
        if request is None:
            return
        for index, seq in enumerate(request.seqs):
            if seq.seq_id in self._seq_owner:
                self.scheduler.abort(seq.seq_id)
                self._finish(request, index, seq, "abort",
                             GenOut("", [], seq.num_prompt_tokens, len(seq.output_ids)), free=False)

    def abort_all(self, reason: str = "abort", error: str | None = None) -> None:
        self._pending.clear()
        self._inflight = None
        for request in list(self._requests.values()):
            for index, seq in enumerate(request.seqs):
                if seq.seq_id in self._seq_owner:
                    self.scheduler.abort(seq.seq_id)
                    out = GenOut("", [], seq.num_prompt_tokens, len(seq.output_ids), error=error)
                    self._finish(request, index, seq, reason, out, free=False)

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work or bool(self._pending) or self._inflight is not None

    # ------------------------------------------------------------------ the step

    @torch.inference_mode()
    def step(self) -> None:
        """Plan and queue the next step while the current one runs on the device.

        Each sequence in flight holds a placeholder for the token being sampled, so the next
        step is scheduled, built and queued before that token is known: the runner reads it
        from the device. Only then does the engine wait for the running step's tokens, and it
        detokenizes and delivers them while the new step runs. A sequence whose pending token is
        its last (its length limit) is left out of the next step; one that stops on its token
        (EOS, a stop token or word) has one more token computed, which is dropped. When the
        runner cannot read pending tokens, or a sequence's sampling reads its earlier tokens
        (penalties), the running step's tokens are read first.
        """
        output = self.scheduler.schedule()
        prev, self._inflight = self._inflight, None
        overlap = self.queue_ahead and not any(reads_output_tokens(s) for s in output.seqs)
        if prev is not None and not overlap:
            self._collect(prev)
            prev = None
        if prev is None:
            self._queue_finals(output.finished)
            if not self.queue_ahead:  # the forward holds the host: deliver what is ready first
                self._flush_pending()
        output = self._runnable(output)
        if output.seqs:
            self._inflight = self._launch(output, prev)
        if prev is not None:
            self._collect(prev)
            self._queue_finals(output.finished)
        self._flush_pending()

    def _runnable(self, output):
        """``output`` without the sequences that stopped, or whose pending token is their last."""
        keep = [(s, n) for s, n in zip(output.seqs, output.num_new_tokens, strict=True)
                if not (s.is_finished or (s.num_pending_tokens and self._at_limit(s, s.num_tokens)))]
        if len(keep) == len(output.seqs):
            return output
        return replace(output, seqs=[s for s, _ in keep], num_new_tokens=[n for _, n in keep])

    def _at_limit(self, seq: Sequence, num_tokens: int) -> bool:
        """Whether a sequence of ``num_tokens`` tokens has reached its length limit."""
        return (num_tokens - seq.num_prompt_tokens >= seq.gen_config.max_new_tokens
                or num_tokens >= self.session_len)

    def _launch(self, output, prev: _InFlight | None) -> _InFlight | None:
        """Queue one step on the device: forward, then sampling; no wait for the result."""
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
            sampling = SamplingBatch.from_sequences(
                sample_seqs, self.vocab_size, self.runner.device, self.eos_token_ids,
                tokenizer=self.tokenizer)
        logits = self.runner.execute(batch)
        self.scheduler.update(output)
        self.counters.steps_total += 1
        if not sample_seqs:
            return None
        sampled = self.sampler.sample(logits, sampling, inplace=True)
        sampled.start_copy()
        positions = [seq.append_placeholder() for seq in sample_seqs]
        return _InFlight(sample_seqs, positions, sampled)

    def _collect(self, inflight: _InFlight) -> None:
        """Wait for a launched step's tokens, put them in place of the placeholders, and apply
        the stops they decide."""
        token_ids = inflight.sampled.host_token_ids()
        logprobs = inflight.sampled.logprobs
        for row, (seq, pos, token) in enumerate(
                zip(inflight.seqs, inflight.positions, token_ids, strict=True)):
            if pos >= len(seq.output_ids):  # computed past the sequence's stop: dropped
                continue
            seq.fill_placeholder(pos, token)
            owner = self._seq_owner.get(seq.seq_id)
            if owner is None:  # aborted while the step ran
                continue
            self._accept(owner[0], seq, pos, token,
                         logprobs[row] if logprobs is not None else None)

    def _accept(self, request: Request, seq: Sequence, pos: int, token: int, logprobs) -> None:
        if pos == 0:
            request.cached_tokens = max(request.cached_tokens, seq.num_cached)
            self.counters.prefix_cache_hit_tokens += seq.num_cached
        self.counters.generation_tokens_total += 1
        cfg = seq.gen_config
        stop_token = (token in self.eos_token_ids and not cfg.ignore_eos) or bool(
            cfg.stop_token_ids and token in cfg.stop_token_ids)
        reason = seq.finish_reason if seq.is_finished else None  # the scheduler ended it
        if reason is None:
            if stop_token:
                reason = "stop"
            elif self._at_limit(seq, seq.num_prompt_tokens + pos + 1):
                reason = "length"
            if reason is not None:
                self.scheduler.finish(seq, reason)
        if reason is not None:
            seq.truncate_output(pos + 1)
        self._pending.append(_Pending(seq, token, logprobs, reason, stop_token, pos + 1))

    def _queue_finals(self, seqs: list[Sequence]) -> None:
        for seq in seqs:
            self._queue_final(seq)

    def _queue_final(self, seq: Sequence) -> None:
        """A sequence the scheduler ended: its last output follows the tokens queued before."""
        if seq.seq_id in self._seq_owner and not any(p.seq is seq for p in self._pending):
            self._pending.append(
                _Pending(seq, None, None, seq.finish_reason or "length", False,
                         len(seq.output_ids)))

    def _flush_pending(self) -> None:
        """Detokenize queued tokens, check stop words, and hand each output to its sink."""
        pending, self._pending = self._pending, []
        for p in pending:
            owner = self._seq_owner.get(p.seq.seq_id)
            if owner is None:  # its final output went out already (aborted)
                continue
            request, index = owner
            detok = request.detoks[index]
            step = detok.step([] if p.stop_token or p.token is None else [p.token])
            reason = p.reason
            if reason is None and step.stopped:
                reason = "stop"
                # It may be in the step now running; that step is queued before any step that
                # reuses its blocks, and the token it computes is dropped.
                self.scheduler.finish(p.seq, reason)
                p.seq.truncate_output(p.num_generated)
            text = step.text_delta
            if reason is not None and not step.stopped:
                text += detok.flush()
            out = GenOut(
                text=text,
                token_ids=[] if p.token is None else [p.token],
                input_token_len=p.seq.num_prompt_tokens,
                generate_token_len=p.num_generated,
                index=index,
                logprobs=[p.logprobs] if p.logprobs is not None else None,
                cached_token_len=request.cached_tokens,
            )
            if reason is not None:
                self._finish(request, index, p.seq, reason, out, free=False)
            else:
                request.sink(out)

    def _finish(self, request: Request, index: int, seq: Sequence, reason: str, out: GenOut,
                free: bool = True) -> None:
        if free:
            self.scheduler.finish(seq, reason)
        seq.finish_reason = reason
        self._seq_owner.pop(seq.seq_id, None)
        out.finish_reason = reason
        request.num_unfinished -= 1
        if request.num_unfinished == 0:
            self._requests.pop(request.request_id, None)
        request.sink(out)

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
            "preemptions_total": self.scheduler.num_preemptions,
        }
