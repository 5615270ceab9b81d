"""All-reduce of decode-sized tensors through peer GPU memory (NVLink), usable in CUDA graphs.

NCCL's all-reduce of one token's hidden state costs ~22 us inside a CUDA graph on two H200s
(45 us eager), and a Llama-3-8B decode step makes 64 of them. PyTorch's symmetric memory maps
a buffer of every rank into every other rank's address space; its one-shot kernel copies the
local tensor into this rank's buffer, meets the peers at a barrier in device memory, then reads
and sums every rank's copy over NVLink: one kernel, no host work, so graphs capture it. Two-shot
(reduce-scatter then all-gather, each rank summing a slice) moves less data per rank and wins at
larger sizes and more ranks. Neither uses NVLink multicast.

Which sizes take which path is :data:`PATHS` (bytes; from ``scripts/bench_all_reduce.py``);
above them, and for dtypes the kernels lack (float16), NCCL.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

MiB = 1 << 20
# Per world size: (largest one-shot all-reduce, largest two-shot one), in bytes. With two ranks
# one-shot reads as much as two-shot and needs one barrier fewer.
PATHS = {2: (8 * MiB, 8 * MiB), 4: (512 << 10, 8 * MiB), 8: (256 << 10, 8 * MiB)}
DTYPES = (torch.bfloat16, torch.float32)
# PyTorch registers a group name with symmetric memory once per process, bound to that group's
# store; a later engine's group reuses the name with a new store, so it could never meet its
# workers. A process sets the path up for its first tensor-parallel engine only.
_used_group_names: set[str] = set()


class SymmetricMemoryAllReduce:
    """Sums tensors of one dtype, up to a size, over ``group`` through a symmetric buffer."""

    def __init__(self, group: dist.ProcessGroup, device: torch.device, dtype: torch.dtype):
        import torch.distributed._symmetric_memory as symm_mem

        world = dist.get_world_size(group)
        self.one_shot_bytes, self.max_bytes = PATHS[world]
        self.dtype = dtype
        self.group_name = group.group_name
        enable = getattr(symm_mem, "enable_symm_mem_for_group", None)
        if enable is not None:  # needed before PyTorch 2.10; deprecated and harmless since
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                enable(self.group_name)
        self.buffer = symm_mem.empty(self.max_bytes // dtype.itemsize, dtype=dtype, device=device)
        symm_mem.rendezvous(self.buffer, self.group_name)
        ops = torch.ops.symm_mem
        # Older releases lack the variants that copy the input in, or write to an output.
        self._one_shot_copy = getattr(ops, "one_shot_all_reduce_copy_out", None)
        self._two_shot_out = getattr(ops, "two_shot_all_reduce_out", None)

    @classmethod
    def create(cls, group: dist.ProcessGroup, device: torch.device, dtype: torch.dtype,
               control: dist.ProcessGroup) -> SymmetricMemoryAllReduce | None:
        """The all-reduce where every rank can set it up, else None on every rank (a rank
        without peer access, a world size or dtype the kernels lack, or an older PyTorch)."""
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        usable = (world in PATHS and dtype in DTYPES and world <= torch.cuda.device_count()
                  and group.group_name not in _used_group_names
                  and all(torch.cuda.can_device_access_peer(device, peer)
                          for peer in range(torch.cuda.device_count()) if peer != device.index))
        if not _all_agree(usable, control):
            logger.info("no peer-memory all-reduce (it needs peer access between the GPUs, a "
                        "bfloat16 or float32 model, 2, 4 or 8 ranks, and the first "
                        "tensor-parallel engine of its process): NCCL for every size")
            return None
        instance, error = None, ""
        _used_group_names.add(group.group_name)
        try:
            instance = cls(group, device, dtype)
        except Exception as exc:  # an older PyTorch or a driver without the features it needs
            error = f"{type(exc).__name__}: {exc}"
        if not _all_agree(instance is not None, control):
            logger.warning("rank %d: the peer-memory all-reduce is unavailable (%s); NCCL for "
                           "every size", rank, error or "another rank could not set it up")
            return None
        return instance

    def takes(self, x: torch.Tensor) -> bool:
        nbytes = x.numel() * x.element_size()
        return (x.dtype == self.dtype and nbytes <= self.max_bytes and nbytes % 16 == 0
                and x.is_contiguous() and x.storage_offset() == 0)

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of ``x`` over the ranks, in a new tensor (the path :data:`PATHS` picks)."""
        if x.numel() * x.element_size() <= self.one_shot_bytes:
            return self.one_shot(x)
        return self.two_shot(x)

    def one_shot(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank reads every peer's whole copy and sums it."""
        n = x.numel()
        out = torch.empty_like(x)
        buffer = self.buffer[:n]
        if self._one_shot_copy is not None:
            self._one_shot_copy(buffer, x.view(-1), "sum", self.group_name, out.view(-1))
        else:
            buffer.copy_(x.view(-1))
            torch.ops.symm_mem.one_shot_all_reduce_out(buffer, "sum", self.group_name,
                                                       out.view(-1))
        return out

    def two_shot(self, x: torch.Tensor) -> torch.Tensor:
        """Each rank sums one slice of every copy, then every rank reads the summed slices."""
        n = x.numel()
        out = torch.empty_like(x)
        buffer = self.buffer[:n]
        buffer.copy_(x.view(-1))
        if self._two_shot_out is not None:
            self._two_shot_out(buffer, "sum", self.group_name, out.view(-1))
        else:
            torch.ops.symm_mem.two_shot_all_reduce_(buffer, "sum", self.group_name)
            out.view(-1).copy_(buffer)
        return out


def _all_agree(ok: bool, control: dist.ProcessGroup) -> bool:
    """Whether ``ok`` holds on every rank (a collective over the CPU group ``control``)."""
    flag = torch.tensor([int(ok)], dtype=torch.int64)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=control)
    return bool(flag.item())
