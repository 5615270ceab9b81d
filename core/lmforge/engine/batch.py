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

    ``block_tables[i]`` may be the sequence's own list: read it during the step, do not keep it.

    Batch slots, for runners that keep block tables on the device between steps (a runner may
    ignore them): every running sequence holds a slot, a row of that table, from its admission
    until it leaves the running queue (finished, aborted, preempted or isolated after a failed
    step; one that comes back gets a slot anew). ``slots[i]`` is row ``i``'s slot; the
    ``new_block_*`` lists are the blocks the slots do not hold yet: block ``new_block_ids[k]``
    goes to column ``new_block_cols[k]`` of slot ``new_block_slots[k]``. Once they are written,
    the first ``len(block_tables[i])`` columns of slot ``slots[i]`` are ``block_tables[i]``. A
    batch whose sequences hold no slots (warm-up, scoring) leaves ``slots`` empty. A batch with
    slots sent to a runner that keeps the tables (a tensor-parallel worker) may leave
    ``block_tables`` empty.
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
    slots: list[int] = field(default_factory=list)
    new_block_slots: list[int] = field(default_factory=list)
    new_block_cols: list[int] = field(default_factory=list)
    new_block_ids: list[int] = field(default_factory=list)

    @property
    def num_seqs(self) -> int:
        return len(self.q_lens)

    @property
    def num_tokens(self) -> int:
        return len(self.input_ids)

    @property
    def is_decode(self) -> bool:
        # Every row has at least one new token, so one token per row means exactly one each.
        return self.num_tokens == self.num_seqs

    @property
    def q_start(self) -> list[int]:
        starts, total = [], 0
        for n in self.q_lens:
            starts.append(total)
            total += n
        return starts
