"""The interface a model runner implements; every engine plugin provides one.

The core runtime (scheduler, block manager, sampler, async API) is shared; an engine differs only
in how it stores weights and the paged K/V cache and how it runs one forward step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from ..model.loader import ModelInfo
    from .batch import ForwardBatch
    from .cache_sizing import MemoryEstimate


class ModelRunner(Protocol):
    """Owns the weights, the K/V pool and the kernels of one model on one device.

    Construction loads the weights (``model_info.load_format`` may be ``"dummy"``: random values
    of the right shapes). The engine then asks how many cache blocks fit, allocates them once, and
    calls :meth:`execute` once per scheduler step.
    """

    device: torch.device
    dtype: torch.dtype
    # True when ``execute`` reads pending input tokens from ``ForwardBatch.prev_tokens`` (see
    # there); the engine then queues each step before reading the previous step's tokens. A
    # runner without this attribute gets batches whose tokens are all known.
    accepts_prev_tokens: bool

    def __init__(self, model_info: ModelInfo, engine_config: object) -> None: ...

    @classmethod
    def memory_estimate(cls, model_info: ModelInfo, engine_config: object) -> MemoryEstimate:
        """Optional: what the runner will need, asked before it is built, so that a K/V cache
        given in tokens or GiB that cannot fit is refused before any weight loads."""
        ...

    def cache_block_bytes(self, block_size: int) -> int:
        """Bytes of one K/V block across all layers in the engine's cache layout (its
        ``quant_policy`` included)."""
        ...

    def num_cache_blocks(self, block_size: int, cache_max_entry_count: float) -> int:
        """How many K/V blocks of ``block_size`` tokens fit: a fraction of free device memory
        (``cache_max_entry_count`` <= 1) or that many blocks (> 1)."""
        ...

    def allocate_cache(self, num_blocks: int, block_size: int) -> None:
        """Allocate the paged K/V pool of ``num_blocks`` blocks of ``block_size`` tokens; a pool
        that does not fit raises :class:`~lmforge.errors.ConfigError` with the numbers."""
        ...

    def execute(self, batch: ForwardBatch) -> torch.Tensor:
        """Run one forward step. Returns float32 logits of shape ``[k, vocab]``: one row per
        sequence with ``need_logits`` (in batch order), or, with ``return_all_logits``, one row
        per input token. They may live in a buffer the next call overwrites (a CUDA graph's
        output): use or copy them before the next step."""
        ...

    def close(self) -> None:
        """Free device memory; the runner is unusable afterwards."""
        ...
