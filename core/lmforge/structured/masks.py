"""Token masks of constrained rows: filled on the host by the matchers, applied on the device.

A mask is a bitmask: bit ``t % 32`` of int32 word ``t // 32`` is set when token ``t`` is allowed.
The engine fills the masks while the step's forward runs on the device, copies them in one
transfer and sets the logits of excluded tokens to -inf before sampling; no host sync.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from .compiler import GrammarState

_executor: Any = None
_executor_lock = threading.Lock()


def grammar_threads() -> int:
    """Threads that fill masks: ``LMFORGE_GRAMMAR_THREADS``, else the CPUs this process may use
    (at most 16)."""
    given = os.environ.get("LMFORGE_GRAMMAR_THREADS", "").strip()
    if given:
        if not given.isdigit() or int(given) < 1:
            raise ConfigError(
                f"LMFORGE_GRAMMAR_THREADS is {given!r}; set it to a whole number of 1 or more.")
        return int(given)
    return min(16, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def _parallel_executor() -> Any:
    """llguidance's thread pool for filling many rows at once (made on first use)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            import llguidance

            _executor = llguidance.LLExecutor(num_threads=grammar_threads())
        return _executor


def reset_executor() -> None:
    """Drop the thread pool, so the next fill makes one with :func:`grammar_threads` threads."""
    global _executor
    with _executor_lock:
        _executor = None


def bitmask_width(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


def fill_bitmask(states: Sequence[GrammarState], pin_memory: bool = False) -> torch.Tensor:
    """The host bitmask ([len(states), words] int32) of the tokens each state allows next.

    A state that is done or failed allows every token: its sequence is ending anyway.
    """
    vocab_size = max(s.vocab_size for s in states)
    mask = torch.full((len(states), bitmask_width(vocab_size)), -1, dtype=torch.int32,
                      pin_memory=pin_memory)
    live = [(s.matcher, row) for row, s in enumerate(states)
            if not (s.matcher.is_stopped() or s.matcher.is_error())]
    row_bytes = mask.shape[1] * 4
    if len(live) == 1:
        matcher, row = live[0]
        matcher.unsafe_compute_mask_ptr(mask[row].data_ptr(), row_bytes)
    elif live:
        _parallel_executor().unsafe_compute_mask_ptr(live, mask.data_ptr(), row_bytes, len(states))
    return mask


_SHIFTS: dict[torch.device, torch.Tensor] = {}


def apply_bitmask(logits: torch.Tensor, rows: torch.Tensor | None,
                  bitmask: torch.Tensor) -> None:
    """Set to -inf, in place, the logits that ``bitmask`` excludes.

    :param logits: [B, V] float.
    :param rows: [R] long, the logits rows the bitmask rows belong to; None when R == B in order.
    :param bitmask: [R, W] int32 on the logits' device; tokens past ``32 * W`` are excluded.
    """
    shifts = _SHIFTS.get(logits.device)
    if shifts is None:
        shifts = _SHIFTS[logits.device] = torch.arange(32, dtype=torch.int32,
                                                       device=logits.device)
    vocab = logits.shape[1]
    allowed = ((bitmask.unsqueeze(-1) >> shifts) & 1).flatten(1).bool()
    if allowed.shape[1] >= vocab:
        allowed = allowed[:, :vocab]
    else:
        allowed = torch.nn.functional.pad(allowed, (0, vocab - allowed.shape[1]))
    if rows is None:
        logits.masked_fill_(~allowed, float("-inf"))
        return
    selected = logits.index_select(0, rows).masked_fill_(~allowed, float("-inf"))
    logits.index_copy_(0, rows, selected)


@dataclass
class GrammarRows:
    """The constrained rows of a step and their grammar states, in row order."""

    rows: list[int]
    states: list[GrammarState]

    def device_masks(self, device: torch.device,
                     batch_size: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Fill the masks now (states must hold every accepted token) and queue them to
        ``device``; returns the rows (None when every row is constrained) and the bitmask."""
        on_gpu = device.type == "cuda"
        host = fill_bitmask(self.states, pin_memory=on_gpu)
        bitmask = host.to(device, non_blocking=True) if on_gpu else host
        if len(self.rows) == batch_size:
            return None, bitmask
        rows = torch.tensor(self.rows, dtype=torch.long, pin_memory=on_gpu)
        return (rows.to(device, non_blocking=True) if on_gpu else rows), bitmask
