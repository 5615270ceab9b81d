"""The collectives the decoder runs: what makes a rank's shard compute its part of the model.

:class:`SingleDevice` is the whole model on one device (every call is the identity);
:class:`TensorParallelComm` is one rank of several. Both are plain objects over tensors, so a
decoder step that calls them captures into a CUDA graph (every rank captures the same buckets in
the same order, so their collectives pair up).
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .plan import ShardPlan

logger = logging.getLogger(__name__)

# PyTorch 2.13 renamed all_gather_into_tensor (the GPU machines run 2.11).
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
# "nccl" sends every all-reduce through NCCL (the measurements' baseline); "auto" lets
# decode-sized ones take the path over peer GPU memory where it is available.
ALL_REDUCE_ENV = "LMFORGE_TP_ALL_REDUCE"


class SingleDevice:
    """The whole model on one device: embedding lookup, no reduction, logits as computed."""

    rank = 0
    size = 1

    def embed(self, input_ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, weight)

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def gather_vocab(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


class TensorParallelComm:
    """One rank's collectives over ``group`` (NCCL on CUDA, gloo on the CPU).

    ``fast`` optionally takes the all-reduces it accepts (see :mod:`.symm_mem`); the rest go
    through the group. Every rank decides the same way for the same tensor, so the ranks
    always meet in the same collective.
    """

    def __init__(self, plan: ShardPlan, group: dist.ProcessGroup, fast=None) -> None:
        self.rank = plan.rank
        self.size = plan.size
        self.vocab_start = plan.vocab_start
        self.vocab_size = plan.config.vocab_size
        self.group = group
        self.fast = fast

    def embed(self, input_ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Vocabulary-parallel lookup: each rank embeds the ids in its rows, zeros elsewhere,
        and the ranks sum."""
        local = input_ids - self.vocab_start
        inside = (local >= 0) & (local < weight.shape[0])
        hidden = F.embedding(torch.where(inside, local, 0), weight)
        return self.all_reduce(hidden.masked_fill_(~inside[:, None], 0))

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of ``x`` over the ranks (row-parallel partial outputs)."""
        if self.fast is not None and self.fast.takes(x):
            return self.fast.all_reduce(x)
        dist.all_reduce(x, group=self.group)
        return x

    def gather_vocab(self, logits: torch.Tensor) -> torch.Tensor:
        """Rank 0 gets the logits of the whole vocabulary ``[rows, vocab]``; the other ranks an
        empty ``[rows, 0]`` (only the driver samples). An all-gather, which graphs capture: rank 0
        receives as much as a gather would bring it, and waits no longer."""
        rows, local = logits.shape
        logits = logits.contiguous()
        gathered = logits.new_empty(self.size * rows, local)
        _all_gather(gathered, logits, group=self.group)
        if self.rank != 0:
            return logits[:, :0]
        by_rank = gathered.view(self.size, rows, local).permute(1, 0, 2)
        return by_rank.reshape(rows, self.size * local)[:, : self.vocab_size]


def build_comm(plan: ShardPlan, device: torch.device, dtype: torch.dtype,
               control: dist.ProcessGroup):
    """The collectives of rank ``plan.rank``: :class:`SingleDevice` alone, else
    :class:`TensorParallelComm` over the default group, with the peer-memory all-reduce on CUDA
    when every rank can set it up (they agree over ``control``). Collective: every rank calls it
    at the same point of its start-up."""
    if plan.size == 1:
        return SingleDevice()
    group = dist.group.WORLD
    fast = None
    if device.type == "cuda" and os.environ.get(ALL_REDUCE_ENV, "auto") != "nccl":
        from .symm_mem import SymmetricMemoryAllReduce

        fast = SymmetricMemoryAllReduce.create(group, device, dtype, control)
    logger.info("tensor parallel rank %d of %d: all-reduce through %s", plan.rank, plan.size,
                "peer memory for decode sizes, NCCL above" if fast else dist.get_backend(group))
    return TensorParallelComm(plan, group, fast)
