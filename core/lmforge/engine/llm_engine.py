"""The synchronous engine: requests in, one scheduler step at a time, outputs to each request's sink.

A step is three calls (schedule → execute → update) plus sampling and stop checks. Everything
here runs in one thread (the engine loop's); the front ends in ``async_engine`` talk to it
through commands.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

import torch

from ..errors import PromptTooLongError
from ..messages import GenerationConfig
from .detokenizer import IncrementalDetokenizer
from .outputs import GenOut
from .request import Request
from .sampler import Sampler
from .sampling_batch import SamplingBatch
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
    preemptions_total: int = 0


@dataclass
class _Pending:
    """A sampled token whose text is not out yet (see :meth:`LLMEngine.step`)."""

    seq: Sequence
    token: int
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

    # ------------------------------------------------------------------ requests

    def check_prompt(self, prompt_ids: list[int], gen_config: GenerationConfig) -> None:
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
        self.check_prompt(request.prompt_ids, request.gen_config)
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
        for request in list(self._requests.values()):
            for index, seq in enumerate(request.seqs):
                if seq.seq_id in self._seq_owner:
                    self.scheduler.abort(seq.seq_id)
                    out = GenOut("", [], seq.num_prompt_tokens, len(seq.output_ids), error=error)
                    self._finish(request, index, seq, reason, out, free=False)

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work or bool(self._pending)

    # ------------------------------------------------------------------ the step

    @torch.inference_mode()
    def step(self) -> None:
        """Run one scheduler step and deliver outputs.

        The previous step's tokens are detokenized and delivered while this step runs on the
        device: the engine waits for the device only when it reads the sampled token ids. Stops
        decided by the token itself (EOS, lengths) take effect at once; a stop word is seen one
        step later, and the token computed meanwhile is dropped.
        """
        output = self.scheduler.schedule()
        sample_seqs: list[Sequence] = []
        if output.seqs:
            batch = self.scheduler.build_batch(output)
            sample_seqs = [s for s, need in zip(output.seqs, batch.need_logits, strict=True)
                           if need]
            # Sampling inputs go to the device before the forward is queued: a copy from
            # pageable host memory waits for the device, so after the launch it would stall
            # the host until the step finished and nothing would overlap.
            if sample_seqs:
                sampling = SamplingBatch.from_sequences(
                    sample_seqs, self.vocab_size, self.runner.device, self.eos_token_ids,
                    tokenizer=self.tokenizer)
            if not batch.is_decode:
                # A prefill waits for the device inside the forward; deliver first, so no
                # finished token waits for it.
                self._flush_pending()
            logits = self.runner.execute(batch)
            self.scheduler.update(output)
            self.counters.steps_total += 1
            if sample_seqs:
                sampled = self.sampler.sample(logits, sampling, inplace=True)
        self._flush_pending()
        for seq in output.finished:  # ended by the scheduler: the pool or session is full
            self._finish_by_scheduler(seq)
        if not sample_seqs:
            return
        token_ids = sampled.token_ids.tolist()
        for row, (seq, token) in enumerate(zip(sample_seqs, token_ids, strict=True)):
            logprobs = sampled.logprobs[row] if sampled.logprobs is not None else None
            self._append(seq, token, logprobs)

    def _append(self, seq: Sequence, token: int, logprobs) -> None:
        """Add a sampled token and apply the stops the token decides; queue its text."""
        owner = self._seq_owner.get(seq.seq_id)
        if owner is None or seq.is_finished:  # aborted, or stopped by a stop word meanwhile
            return
        request, _ = owner
        if not seq.output_ids:
            request.cached_tokens = max(request.cached_tokens, seq.num_cached)
            self.counters.prefix_cache_hit_tokens += seq.num_cached
        seq.append_token(token)
        self.counters.generation_tokens_total += 1
        cfg = seq.gen_config
        stop_token = (token in self.eos_token_ids and not cfg.ignore_eos) or bool(
            cfg.stop_token_ids and token in cfg.stop_token_ids)
        reason = None
        if stop_token:
            reason = "stop"
        elif len(seq.output_ids) >= cfg.max_new_tokens or seq.num_tokens >= self.session_len:
            reason = "length"
        if reason is not None:
            self.scheduler.finish(seq, reason)
        self._pending.append(
            _Pending(seq, token, logprobs, reason, stop_token, len(seq.output_ids)))

    def _flush_pending(self) -> None:
        """Detokenize queued tokens, check stop words, and hand each output to its sink."""
        pending, self._pending = self._pending, []
        for p in pending:
            owner = self._seq_owner.get(p.seq.seq_id)
            if owner is None:  # its final output went out already (aborted)
                continue
            request, index = owner
            detok = request.detoks[index]
            step = detok.step([] if p.stop_token else [p.token])
            reason = p.reason
            if reason is None and step.stopped:
                reason = "stop"
                # It may be in the step now running: its blocks are reused only after that.
                self.scheduler.finish(p.seq, reason)
            text = step.text_delta
            if reason is not None and not step.stopped:
                text += detok.flush()
            out = GenOut(
                text=text,
                token_ids=[p.token],
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

    def _finish_by_scheduler(self, seq: Sequence) -> None:
        owner = self._seq_owner.get(seq.seq_id)
        if owner is None:
            return
        request, index = owner
        text = request.detoks[index].flush()
        out = GenOut(text, [], seq.num_prompt_tokens, len(seq.output_ids), index=index,
                     cached_token_len=request.cached_tokens)
        self._finish(request, index, seq, seq.finish_reason or "length", out, free=False)

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

        Runs in prefill chunks of at most ``max_prefill_token_num`` tokens through the paged cache,
        so inputs longer than one step's budget work; the blocks are freed afterwards.
        """
        if len(token_ids) < 2:
            raise PromptTooLongError("Perplexity needs at least two tokens.")
        self.check_prompt(token_ids[:-1], GenerationConfig())
        seq = Sequence(list(token_ids), GenerationConfig(max_new_tokens=0))
        chunk = self.scheduler.config.max_prefill_token_num
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
            "requests_total": c.requests_total,
            "prompt_tokens_total": c.prompt_tokens_total,
            "generation_tokens_total": c.generation_tokens_total,
            "prefix_cache_hit_tokens": c.prefix_cache_hit_tokens,
            "steps_total": c.steps_total,
            "time": time.time(),
        }
