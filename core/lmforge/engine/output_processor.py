"""The one place where a step's results change requests.

For each token a step sampled, :meth:`OutputProcessor.process` puts it in its sequence, runs the
detokenizer, advances a constrained sequence's grammar, decides every stop (EOS or a stop token,
a stop word, a completed grammar, ``max_new_tokens`` or the session length) at the step the
token arrives, finishes the sequence (the scheduler frees its blocks) and hands the output to
the request's sink. Sequences the scheduler ended, and aborted
or failed requests, are finished here too, so a sequence's state and a request's outputs change
in one component.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .detokenizer import IncrementalDetokenizer
from .outputs import GenOut
from .request import Request
from .scheduler import Scheduler
from .sequence import Sequence


@dataclass
class EngineCounters:
    requests_total: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    prefix_cache_hit_tokens: int = 0
    steps_total: int = 0
    preemptions_total: int = 0
    failed_steps_total: int = 0

    def reset(self) -> None:
        """Back to zero, in place: the engine's parts share this one object."""
        for name in self.__dataclass_fields__:
            setattr(self, name, 0)


class OutputProcessor:
    """Turns sampled tokens into request outputs, and finishes sequences."""

    def __init__(self, scheduler: Scheduler, tokenizer, eos_token_ids: list[int],
                 session_len: int, counters: EngineCounters):
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.eos_token_ids = set(eos_token_ids)
        self.session_len = session_len
        self.counters = counters
        self._requests: dict[int, Request] = {}
        # Every unfinished sequence: its request and choice index.
        self._owner: dict[int, tuple[Request, int]] = {}

    # ------------------------------------------------------------------ requests

    def add(self, request: Request) -> list[Sequence]:
        """Start tracking a request; returns the sequences the scheduler should run (none
        when ``max_new_tokens`` is 0: those finish at once)."""
        cfg = request.gen_config
        self.counters.requests_total += 1
        self.counters.prompt_tokens_total += len(request.prompt_ids)
        for index in range(cfg.n):
            # Seeded choices must differ from each other yet stay reproducible.
            choice_cfg = cfg if cfg.random_seed is None or index == 0 else replace(
                cfg, random_seed=cfg.random_seed + index)
            seq = Sequence(list(request.prompt_ids), choice_cfg, adapter=request.adapter,
                           allow_prefix_match=request.allow_prefix_match)
            if request.grammar is not None:
                seq.grammar = request.grammar.new_state()
            request.seqs.append(seq)
            request.detoks.append(IncrementalDetokenizer(
                self.tokenizer, request.prompt_ids, skip_special_tokens=cfg.skip_special_tokens,
                stop_words=cfg.stop_words,
                include_stop_str_in_output=cfg.include_stop_str_in_output))
            self._owner[seq.seq_id] = (request, index)
        request.num_unfinished = cfg.n
        self._requests[request.request_id] = request
        if cfg.max_new_tokens == 0:
            for seq in request.seqs:
                self._finish(seq, "length")
            return []
        return list(request.seqs)

    def owns(self, seq: Sequence) -> bool:
        return seq.seq_id in self._owner

    def request_of(self, seq: Sequence) -> Request:
        return self._owner[seq.seq_id][0]

    def at_limit(self, seq: Sequence, num_tokens: int) -> bool:
        """Whether a sequence of ``num_tokens`` tokens has reached its length limit."""
        return (num_tokens - seq.num_prompt_tokens >= seq.gen_config.max_new_tokens
                or num_tokens >= self.session_len)

    # ------------------------------------------------------------------ a step's results

    def process(self, seqs: list[Sequence], positions: list[int], token_ids: list[int],
                logprobs: list | None) -> None:
        """The tokens one step sampled: ``token_ids[i]`` goes to ``seqs[i].output_ids[
        positions[i]]`` (a placeholder until now)."""
        for row, (seq, pos, token) in enumerate(zip(seqs, positions, token_ids, strict=True)):
            if pos >= len(seq.output_ids):  # computed past the sequence's stop: dropped
                continue
            seq.fill_placeholder(pos, token)
            if seq.seq_id in self._owner:  # else aborted while its step ran
                self._accept(seq, pos, token, logprobs[row] if logprobs is not None else None)

    def _accept(self, seq: Sequence, pos: int, token: int, logprobs) -> None:
        request, index = self._owner[seq.seq_id]
        if pos == 0:
            request.cached_tokens = max(request.cached_tokens, seq.num_cached)
            self.counters.prefix_cache_hit_tokens += seq.num_cached
        self.counters.generation_tokens_total += 1
        cfg = seq.gen_config
        stop_token = (token in self.eos_token_ids and not cfg.ignore_eos) or bool(
            cfg.stop_token_ids and token in cfg.stop_token_ids)
        grammar_error = None
        if seq.grammar is not None and not stop_token and not seq.grammar.accept(token):
            grammar_error = f"the grammar rejected token {token}: {seq.grammar.error}"
        detok = request.detoks[index]
        step = detok.step([] if stop_token else [token])
        if grammar_error is not None:
            reason = "error"
        elif stop_token or step.stopped or (seq.grammar is not None and seq.grammar.done):
            reason = "stop"
        elif self.at_limit(seq, seq.num_prompt_tokens + pos + 1):
            reason = "length"
        else:  # the scheduler may have ended it (session length) while this token was sampled
            reason = seq.finish_reason if seq.is_finished else None
        text = step.text_delta
        if reason is not None and not step.stopped:
            text += detok.flush()
        out = GenOut(text=text, token_ids=[token], input_token_len=seq.num_prompt_tokens,
                     generate_token_len=pos + 1, index=index,
                     logprobs=[logprobs] if logprobs is not None else None,
                     cached_token_len=request.cached_tokens)
        if reason is None:
            request.sink(out)
            return
        seq.truncate_output(pos + 1)
        out.error = grammar_error
        self._finish(seq, reason, out)

    def finished_by_scheduler(self, seqs: list[Sequence]) -> None:
        """Sequences the scheduler ended (their whole length or the whole cache used): their
        last output, after any token of theirs processed before."""
        for seq in seqs:
            if seq.seq_id in self._owner:
                seq.truncate_output(len(seq.output_ids) - seq.num_pending_tokens)
                self._finish(seq, seq.finish_reason or "length")

    # ------------------------------------------------------------------ ending requests

    def abort(self, request_id: int, reason: str = "abort", error: str | None = None) -> None:
        """End every unfinished sequence of a request."""
        request = self._requests.get(request_id)
        for seq in request.seqs if request is not None else ():
            if seq.seq_id in self._owner:
                self._finish(seq, reason, error=error)

    def abort_all(self, reason: str = "abort", error: str | None = None) -> None:
        for request_id in list(self._requests):
            self.abort(request_id, reason, error)

    def _finish(self, seq: Sequence, reason: str, out: GenOut | None = None,
                error: str | None = None) -> None:
        """The one place a sequence ends: its blocks go back, its request gets its last output."""
        self.scheduler.finish(seq, reason)
        request, index = self._owner.pop(seq.seq_id)
        if out is None:
            detok = request.detoks[index]
            text = "" if reason in ("abort", "error") else detok.flush()
            out = GenOut(text, [], seq.num_prompt_tokens, len(seq.output_ids), index=index,
                         cached_token_len=request.cached_tokens, error=error)
        out.finish_reason = reason
        request.num_unfinished -= 1
        if request.num_unfinished == 0:
            self._requests.pop(request.request_id, None)
        request.sink(out)
