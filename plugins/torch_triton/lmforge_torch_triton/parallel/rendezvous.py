"""How the ranks of one engine find each other: torch.distributed's standard environment
rendezvous (the variables torchrun sets), a TCP store hosted by rank 0, and two groups.

Rank 0 (the driver) hosts the store and publishes the job (model and engine configuration) in
it; a worker needs only ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` to join, which is what lets workers on other hosts join the same way. Every rank
then creates the default group (NCCL on CUDA, gloo on the CPU) for the model's collectives and
a gloo group for the driver's commands, which waits as long as the engine is idle.
"""

from __future__ import annotations

import datetime
import os
import pickle
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

PREFIX = "lmforge/tp"
JOB_KEY = f"{PREFIX}/job"
# Store operations and collectives of a healthy engine finish in seconds; a rank that dies is
# noticed by the driver's monitor long before these expire.
STORE_TIMEOUT = datetime.timedelta(minutes=30)
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)
# Workers wait for the driver's next command for as long as the engine is idle.
IDLE_TIMEOUT = datetime.timedelta(days=365)


@dataclass
class Rank:
    """One rank's place in the engine: its index, the store, and the two groups."""

    rank: int
    size: int
    local_rank: int
    store: dist.Store
    control: dist.ProcessGroup | None = field(default=None, repr=False)

    def device(self, device_type: str) -> torch.device:
        """This rank's device: GPU ``LOCAL_RANK`` on CUDA."""
        if device_type == "cuda":
            return torch.device("cuda", self.local_rank)
        return torch.device(device_type)

    def mark(self, what: str) -> None:
        self.store.set(f"{PREFIX}/{what}/{self.rank}", "1")

    def keys(self, what: str) -> list[str]:
        """The keys the other ranks set with :meth:`mark`."""
        return [f"{PREFIX}/{what}/{r}" for r in range(self.size) if r != self.rank]


def host_store(size: int, host: str = "127.0.0.1") -> dist.TCPStore:
    """Rank 0's store on a free port (``store.port``)."""
    return dist.TCPStore(host, 0, size, is_master=True, wait_for_workers=False,
                         timeout=STORE_TIMEOUT)


def publish_job(store: dist.Store, model_info: Any, engine_config: Any) -> None:
    store.set(JOB_KEY, pickle.dumps((model_info, engine_config)))


def join_from_env() -> tuple[Rank, Any, Any]:
    """A worker's rank from the environment, and the job rank 0 published."""
    env = os.environ
    rank, size = int(env["RANK"]), int(env["WORLD_SIZE"])
    store = dist.TCPStore(env["MASTER_ADDR"], int(env["MASTER_PORT"]), size, is_master=False,
                          timeout=STORE_TIMEOUT)
    model_info, engine_config = pickle.loads(store.get(JOB_KEY))
    return Rank(rank, size, int(env.get("LOCAL_RANK", rank)), store), model_info, engine_config


def init_groups(me: Rank, device: torch.device) -> None:
    """Create the default group and the command group (a collective: every rank calls it)."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, store=dist.PrefixStore(f"{PREFIX}/pg", me.store),
                            rank=me.rank, world_size=me.size, timeout=COLLECTIVE_TIMEOUT,
                            **kwargs)
    me.control = dist.new_group(backend="gloo", timeout=IDLE_TIMEOUT)
