"""Plain data that crosses from the scheduler to a model runner, and back.

The scheduler decides, for each scheduled sequence, how many of its not-yet-computed tokens run
this step (a whole prompt, a prefill chunk, or one decode token). The runner computes their K/V
into the sequence's paged blocks and returns logits for the sequences that need a next token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ForwardBatch:
    """One model step over a mixed batch of prefill chunks and decode tokens.

    For sequence ``i``: its new tokens are ``input_ids[q_start[i] : q_start[i] + q_lens[i]]``,
    at positions ``kv_lens[i] - q_lens[i]`` … ``kv_lens[i] - 1``; the K/V of the earlier
    ``kv_lens[i] - q_lens[i]`` positions is already in the cache blocks ``block_tables[i]``
    (block ``j`` holds positions ``j * block_size`` … ``(j + 1) * block_size - 1``), and the
    runner writes the new tokens' K/V into the same table. ``need_logits[i]`` says whether the
    runner returns the logits of that sequence's last new token (false for a prefill chunk that
    does not reach the end of the prompt).
    """

    input_ids: list[int]
    q_lens: list[int]
    kv_lens: list[int]
    block_tables: list[list[int]]
    need_logits: list[bool]
    block_size: int
    # Per-token logits for every new token (perplexity); off in normal generation.
    return_all_logits: bool = False
    # Adapter (LoRA) name per sequence, for engines that support them; None means the base model.
    adapters: list[str | None] = field(default_factory=list)
    # Steps queued back to back: a sequence's last input token may be the one the step before
    # is still sampling. Its ``input_ids`` entry is then -1 and ``prev_rows[i]`` is the row of
    # ``prev_tokens`` (that step's sampled ids, a device tensor) to read it from; -1 elsewhere.
    prev_tokens: Any = None
    prev_rows: list[int] = field(default_factory=list)

    @property
    def num_seqs(self) -> int:
        return len(self.q_lens)

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def is_decode(self) -> bool:
        return all(n == 1 for n in self.q_lens)

    @property
    def q_start(self) -> list[int]:
        starts, total = [], 0
        for n in self.q_lens:
            starts.append(total)
            total += n
        return starts
