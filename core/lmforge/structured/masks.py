"""Token masks of constrained rows: filled on the host by the matchers, applied on the device.

A mask is a bitmask: bit ``t % 32`` of int32 word ``t // 32`` is set when token ``t`` is allowed.
The engine fills the masks while the step's forward runs on the device, copies them in one
transfer and sets the logits of excluded tokens to -inf before sampling; no host sync.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..engine.transfer import to_device
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


def fill_bitmask(states: Sequence[GrammarState], out: torch.Tensor | None = None) -> torch.Tensor:
    """The host bitmask ([len(states), words] int32) of the tokens each state allows next,
    written into ``out`` when given (a host tensor of that shape, say a pinned buffer's rows).

    A state that is done or failed allows every token: its sequence is ending anyway.
    """
    vocab_size = max(s.vocab_size for s in states)
    shape = (len(states), bitmask_width(vocab_size))
    mask = torch.empty(shape, dtype=torch.int32) if out is None else out
    if tuple(mask.shape) != shape or not mask.is_contiguous():
        raise ValueError(f"out must be a contiguous {shape} tensor, not {tuple(mask.shape)}")
    live, ended = [], []
    for row, state in enumerate(states):
        matcher = state.matcher
        (ended if matcher.is_stopped() or matcher.is_error() else live).append((matcher, row))
    # Only ended rows are set here (the matchers write every live row): a tensor-wide fill
    # would wake torch's intra-op threads just as the grammar threads start.
    for _, row in ended:
        mask[row] = -1
    row_bytes = mask.shape[1] * 4
    if len(live) == 1:
        matcher, row = live[0]
        matcher.unsafe_compute_mask_ptr(mask[row].data_ptr(), row_bytes)
    elif live:
        _parallel_executor().unsafe_compute_mask_ptr(live, mask.data_ptr(), row_bytes, len(states))
    return mask


class MaskStaging:
    """Host buffers the bitmasks are filled in, reused from step to step.

    On a GPU there are two page-locked buffers used in turn; each is written again only once the
    copy queued from it has run (an event recorded behind the copy), so a fill never overwrites
    a mask the device has yet to read, and no step allocates page-locked memory. On a CPU the
    bitmask is read where it is filled, within the step, so one ordinary buffer serves.
    """

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._copied: list[Any] = [None, None]  # CUDA events behind each buffer's last copy
        self._turn = 0

    def fill(self, states: Sequence[GrammarState], device: torch.device) -> torch.Tensor:
        """The bitmask of ``states`` on ``device``; on a GPU its copy is queued (no wait)."""
        on_gpu = device.type == "cuda"
        slot = self._turn if on_gpu else 0
        self._turn ^= 1
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()  # long done in the engine's order: no wait
        words = bitmask_width(max(s.vocab_size for s in states))
        buffer = self._buffers[slot]
        if buffer is None or buffer.shape[0] < len(states) or buffer.shape[1] != words:
            # Room for twice the rows, so a growing batch reallocates a few times only.
            buffer = torch.empty((2 * len(states), words), dtype=torch.int32, pin_memory=on_gpu)
            self._buffers[slot] = buffer
        host = fill_bitmask(states, out=buffer[: len(states)])
        if not on_gpu:
            return host
        bitmask = host.to(device, non_blocking=True)
        self._copied[slot] = torch.cuda.Event()
        self._copied[slot].record()
        return bitmask


def apply_bitmask(logits: torch.Tensor, rows: torch.Tensor | None,
                  bitmask: torch.Tensor) -> None:
    """Set to -inf, in place, the logits that ``bitmask`` excludes.

    :param logits: [B, V] float, rows contiguous.
    :param rows: [R] long, the logits rows the bitmask rows belong to; None when R == B in order.
    :param bitmask: [R, W] int32 on the logits' device; tokens past ``32 * W`` are excluded.

    On a GPU this is one Triton kernel; on a CPU NumPy unpacks the bits (several times faster
    than shifting them in torch); elsewhere :func:`apply_bitmask_reference`.
    """
    if bitmask.shape[0] == 0:
        return
    kernel = _triton_apply() if logits.is_cuda and logits.stride(1) == 1 else None
    if kernel is not None:
        kernel(logits, rows, bitmask.contiguous())
        return
    if logits.device.type != "cpu":
        apply_bitmask_reference(logits, rows, bitmask)
        return
    import numpy as np

    # As little-endian bytes (no copy on such hosts), bit t of the row is token t's.
    octets = bitmask.contiguous().numpy().astype("<i4", copy=False).view(np.uint8)
    count = min(logits.shape[1], octets.shape[1] * 8)
    bits = np.unpackbits(octets, axis=1, count=count, bitorder="little")
    allowed = torch.from_numpy(bits.view(np.bool_))
    _fill_excluded(logits, rows, allowed)


def apply_bitmask_reference(logits: torch.Tensor, rows: torch.Tensor | None,
                            bitmask: torch.Tensor) -> None:
    """:func:`apply_bitmask` in plain PyTorch, on any device: the bits are shifted out a byte at
    a time, so the widest intermediate holds a byte per token."""
    device = logits.device
    byte_shifts = torch.arange(0, 32, 8, dtype=torch.int32, device=device)
    bit_shifts = torch.arange(8, dtype=torch.uint8, device=device)
    octets = ((bitmask.unsqueeze(-1) >> byte_shifts) & 0xFF).to(torch.uint8)
    allowed = ((octets.unsqueeze(-1) >> bit_shifts) & 1).flatten(1)[:, : logits.shape[1]].bool()
    _fill_excluded(logits, rows, allowed)


def _fill_excluded(logits: torch.Tensor, rows: torch.Tensor | None,
                   allowed: torch.Tensor) -> None:
    """-inf where ``allowed`` ([R, <= V] bool) is False and past its width."""
    target = logits if rows is None else logits.index_select(0, rows)
    width = allowed.shape[1]
    target[:, :width].masked_fill_(~allowed, float("-inf"))
    target[:, width:] = float("-inf")
    if rows is not None:
        logits.index_copy_(0, rows, target)


_TRITON: list[Callable | None] = []


def _triton_apply() -> Callable | None:
    """The Triton kernel's entry point, or None where Triton is not installed."""
    if not _TRITON:
        try:
            from .triton_bitmask import apply_bitmask_triton
        except ImportError:
            apply_bitmask_triton = None
        _TRITON.append(apply_bitmask_triton)
    return _TRITON[0]


@dataclass
class GrammarRows:
    """The constrained rows of a step and their grammar states, in row order."""

    rows: list[int]
    states: list[GrammarState]

    def device_masks(self, device: torch.device, batch_size: int,
                     staging: MaskStaging | None = None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Fill the masks now (states must hold every accepted token) and queue them to
        ``device``; returns the rows (None when every row is constrained) and the bitmask.
        ``staging`` holds the host buffers from step to step (a fresh one by default)."""
        bitmask = (staging or MaskStaging()).fill(self.states, torch.device(device))
        if len(self.rows) == batch_size:
            return None, bitmask
        return to_device(self.rows, torch.long, device), bitmask
