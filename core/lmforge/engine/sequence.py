"""A sequence: one stream of tokens being generated, and its place in the paged cache."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ..messages import GenerationConfig


class SequenceStatus(str, Enum):
    WAITING = "waiting"  # not yet scheduled, or preempted and waiting to resume
    RUNNING = "running"
    FINISHED = "finished"


_ids = itertools.count()

# Stands in ``output_ids`` for a token that a launched step is still sampling.
PLACEHOLDER = -1


@dataclass(eq=False)
class Sequence:
    """Token ids (prompt then output) and the bookkeeping the scheduler needs.

    ``num_computed`` tokens have their K/V in ``block_ids``; the rest still has to run through
    the model. A preempted sequence drops its blocks and sets ``num_computed`` back to 0 (or to
    what the prefix cache still holds) and is recomputed when it resumes.
    """

    prompt_ids: list[int]
    gen_config: GenerationConfig = field(default_factory=GenerationConfig)
    seq_id: int = field(default_factory=lambda: next(_ids))
    output_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    block_ids: list[int] = field(default_factory=list)
    num_computed: int = 0
    num_cached: int = 0  # prompt tokens found in the prefix cache at the last allocation
    arrival_time: float = field(default_factory=time.monotonic)
    finish_reason: str | None = None
    adapter: str | None = None
    num_preemptions: int = 0
    # False makes the block manager skip the prefix-cache lookup for this sequence (its own
    # full blocks are still registered, so later requests can reuse them).
    allow_prefix_match: bool = True
    # Memo of the chained hashes of this sequence's full blocks of tokens, in order. They are a
    # pure function of the token ids and the adapter, so they stay valid across preemption.
    block_hashes: list[bytes] = field(default_factory=list, repr=False)
    # How many of the last ``output_ids`` are PLACEHOLDERs (tokens of steps still running).
    num_pending_tokens: int = 0
    # The batch slot held while running (-1: none), and how many of ``block_ids`` the runner's
    # table holds in that slot as of the last step that ran (see ``slots.BatchSlots``).
    slot: int = -1
    num_slot_blocks: int = 0
    # The grammar state of a constrained sequence (``structured.compiler.GrammarState``): it
    # has accepted every output token that the output processor has seen.
    grammar: Any = field(default=None, repr=False)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def num_uncomputed(self) -> int:
        return self.num_tokens - self.num_computed

    @property
    def priority(self) -> tuple[float, int]:
        """Sort key of first-come-first-served order: earlier arrivals first."""
        return (self.arrival_time, self.seq_id)

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def token_slice(self, start: int, end: int) -> list[int]:
        """``token_ids[start:end]`` without concatenating the whole prompt and output."""
        n = len(self.prompt_ids)
        if end <= n:
            return self.prompt_ids[start:end]
        if start >= n:
            return self.output_ids[start - n : end - n]
        return self.prompt_ids[start:] + self.output_ids[: end - n]

    def append_token(self, token_id: int) -> None:
        self.output_ids.append(token_id)

    def append_placeholder(self) -> int:
        """Hold the place of the token a launched step samples; returns its index in
        ``output_ids``."""
        self.output_ids.append(PLACEHOLDER)
        self.num_pending_tokens += 1
        return len(self.output_ids) - 1

    def fill_placeholder(self, index: int, token_id: int) -> None:
        self.output_ids[index] = token_id
        self.num_pending_tokens -= 1

    def truncate_output(self, length: int) -> None:
        """Drop the outputs after the first ``length`` (tokens computed past a stop)."""
        dropped = self.output_ids[length:]
        del self.output_ids[length:]
        self.num_pending_tokens -= dropped.count(PLACEHOLDER)
