"""The driver's side of tensor parallelism: rank 0 starts ranks 1..tp-1 and commands them.

The workers are fresh interpreters (``python -m lmforge_torch_triton.parallel.worker``, as
multiprocessing's spawn starts them, without re-running the caller's ``__main__``), one per GPU.
They join through the standard environment rendezvous (:mod:`.rendezvous`), load their shard,
then run whatever the driver broadcasts: the same steps, cache allocation and CUDA graph
captures, in the same order, so every collective pairs up.

Failures end in one sentence (:class:`TensorParallelError`), never a hang: a :class:`Monitor`
notices a worker's death at once; waits for the workers poll the store and that monitor; the
driver's collectives fail when a peer's connection closes, and NCCL's are aborted. A process
that stays stuck in a device-side wait for a dead peer (which nothing can cancel) ends itself
with that sentence. Workers end when the driver does: they watch the pipe the driver holds.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lmforge.engine.batch import ForwardBatch
from lmforge.errors import ConfigError, EngineDeadError

from .messages import ALLOCATE, CLOSE, NUM_BLOCKS, STEP, Channel, encode_step
from .monitor import Monitor
from .rendezvous import Rank, host_store, init_groups, publish_job

logger = logging.getLogger(__name__)

WORKER_MODULE = "lmforge_torch_triton.parallel.worker"
REPORT_FD_ENV = "LMFORGE_TP_REPORT_FD"
WATCH_STDIN_ENV = "LMFORGE_TP_WATCH_STDIN"
THREADS_ENV = "LMFORGE_TP_THREADS"
START_TIMEOUT_S = 3600.0  # joining and loading a shard (a 70B checkpoint from a slow disk)
STUCK_GRACE_S = 10.0  # how long a stuck process waits after a death before it ends itself
CLOSE_TIMEOUT_S = 15.0


class TensorParallelError(EngineDeadError):
    """A tensor-parallel rank failed; the engine cannot run another step (restart it)."""


class WorkerGroup:
    """Ranks 1..tp-1 of one engine, seen from rank 0."""

    def __init__(self, model_info: Any, engine_config: Any, device_type: str) -> None:
        size = int(engine_config.tp)
        if dist.is_initialized():
            raise ConfigError(
                "Invalid value for tp: this process already has a torch.distributed group, and "
                "tp > 1 starts its own; use tp=1 here or build the engine in a fresh process."
            )
        self.failure: str | None = None
        self.device_type = device_type
        self._busy = 0
        self._closed = False
        self._host_threads = torch.get_num_threads()
        self._threads = max(1, self._host_threads // size)
        store = host_store(size)
        publish_job(store, model_info, engine_config)
        self.me = Rank(0, size, 0, store)
        self.procs: dict[int, subprocess.Popen] = {}
        reports = {}
        try:
            for rank in range(1, size):
                self.procs[rank], reports[rank] = self._spawn(rank, size, store.port)
        except BaseException:
            for proc in self.procs.values():
                proc.kill()
            for fd in reports.values():
                os.close(fd)
            raise
        self.monitor = Monitor(self.procs, reports, self._on_failure)
        self.channel: Channel | None = None
        if device_type == "cpu":  # the ranks share the cores: more threads than cores crawl
            torch.set_num_threads(self._threads)

    # ------------------------------------------------------------------ start-up

    def _spawn(self, rank: int, size: int, port: int) -> tuple[subprocess.Popen, int]:
        read_fd, write_fd = os.pipe()
        env = dict(
            os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
            WORLD_SIZE=str(size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size),
            PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
            **{REPORT_FD_ENV: str(write_fd), WATCH_STDIN_ENV: "1",
               THREADS_ENV: str(self._threads)},
        )
        try:
            # A session of its own: the terminal's Ctrl-C is for the driver, which shuts the
            # workers down itself.
            proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE], env=env,
                                    stdin=subprocess.PIPE, pass_fds=(write_fd,),
                                    start_new_session=True)
        finally:
            os.close(write_fd)
        return proc, read_fd

    def join(self, device_type: str) -> Rank:
        """Rank 0 joins the groups once every worker has started."""
        self._wait_for("joined", "start")
        device = self.me.device(device_type)
        with self.busy():
            init_groups(self.me, device)
        self.channel = Channel(self.me.control, dist.group.WORLD, device)
        return self.me

    def wait_loaded(self) -> None:
        """Return once every worker holds its shard."""
        self._wait_for("loaded", "load their shards")

    def _wait_for(self, what: str, doing: str) -> None:
        keys = self.me.keys(what)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.me.store.check(keys):
            self.raise_if_failed()
            if time.monotonic() > deadline:
                self.failure = (f"Tensor-parallel workers did not {doing} within "
                                f"{START_TIMEOUT_S:.0f} s; the engine has stopped.")
                self.raise_if_failed()
            time.sleep(0.05)

    # ------------------------------------------------------------------ commands

    def send_step(self, batch: ForwardBatch) -> None:
        """Broadcast a step; its pending tokens follow on the device."""
        args = encode_step(batch)
        with self.busy():
            self.channel.send(STEP, args)
            if args[5] >= 0:  # the header's prev_count: see messages.encode_step
                self.channel.prev_tokens(batch.prev_tokens.contiguous(), len(batch.prev_tokens))

    def num_cache_blocks(self, block_size: int, cache_max_entry_count: float,
                         local_blocks) -> int:
        """The fewest blocks any rank fits; ``local_blocks()`` counts rank 0's."""
        fraction_bits = np.array([cache_max_entry_count], dtype=np.float64).view(np.int64)[0]
        with self.busy():
            self.channel.send(NUM_BLOCKS, [block_size, fraction_bits])
            return self.channel.minimum(local_blocks())

    def allocate_cache(self, num_blocks: int, block_size: int) -> None:
        with self.busy():
            self.channel.send(ALLOCATE, [num_blocks, block_size])

    # ------------------------------------------------------------------ failures

    def busy(self) -> _Busy:
        """A context for a call that waits on the workers; a failure inside it raises
        :class:`TensorParallelError`."""
        return _Busy(self)

    def raise_if_failed(self) -> None:
        if self.failure is not None:
            raise TensorParallelError(self.failure)

    def fail(self, cause: str) -> None:
        """Rank 0 itself failed mid-command: the ranks are out of step for good."""
        if self.failure is None:
            self.failure = f"Tensor-parallel rank 0 {cause}; the engine has stopped."
            threading.Thread(target=self._contain, name="lmforge-tp-failure",
                             daemon=True).start()

    def _on_failure(self, rank: int, cause: str) -> None:
        where = f"cuda:{rank}" if self.device_type == "cuda" else f"pid {self.procs[rank].pid}"
        self.failure = f"Tensor-parallel rank {rank} ({where}) {cause}; the engine has stopped."
        self._contain()

    def _contain(self) -> None:
        """After a failure: stop the workers, cancel what waits on them, and end this process
        if its device stays stuck in a collective."""
        logger.error("%s", self.failure)
        self._stop_workers()
        if self.device_type == "cuda":  # gloo's waits fail by themselves when a peer closes
            _abort_collectives()
        deadline = time.monotonic() + STUCK_GRACE_S
        probe = _DeviceProbe.record(self.me.device(self.device_type))
        while time.monotonic() < deadline:
            if not self._busy and probe.done():
                return
            time.sleep(0.05)
        # A collective with the dead rank never returns on this device: end rather than hang.
        sys.stderr.write(f"{self.failure}\n")
        sys.stderr.flush()
        os._exit(1)

    def exited(self) -> bool:
        """Whether a worker process has ended."""
        return any(proc.poll() is not None for proc in self.procs.values())

    def _stop_workers(self) -> None:
        self.monitor.closing = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()

    # ------------------------------------------------------------------ shutdown

    def close(self, kill: bool = False) -> None:
        """Shut the workers down (no orphans: the ones that do not exit are killed); ``kill``
        does not ask them first (start-up failed on this rank)."""
        if self._closed:
            return
        self._closed = True
        if kill:
            self._stop_workers()
        self.monitor.closing = True
        if self.failure is None and not kill and self.channel is not None:
            try:
                self.channel.send(CLOSE)
            except Exception as exc:  # a worker that died after the last step
                logger.debug("close: %s", exc)
        _destroy_groups(abort=self.failure is not None or kill)
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdin is not None:
                proc.stdin.close()
        self.monitor.stop()
        torch.set_num_threads(self._host_threads)


class _Busy:
    def __init__(self, group: WorkerGroup) -> None:
        self.group = group

    def __enter__(self) -> None:
        self.group.raise_if_failed()
        self.group._busy += 1

    def __exit__(self, kind, exc, tb) -> bool:
        self.group._busy -= 1
        if exc is None or isinstance(exc, TensorParallelError):
            return False
        # A peer's death shows up here first as a broken connection: give the monitor time to
        # name it (while no worker has exited, rank 0 failed by itself).
        start = time.monotonic()
        while self.group.failure is None and time.monotonic() < start + 5.0:
            if time.monotonic() > start + 0.5 and not self.group.exited():
                break
            time.sleep(0.02)
        if self.group.failure is None:
            self.group.fail(f"failed: {type(exc).__name__}: {exc}")
        raise TensorParallelError(self.group.failure) from None


class _DeviceProbe:
    """Whether a device has finished what was queued on it before a given moment."""

    def __init__(self, event: torch.cuda.Event | None) -> None:
        self.event = event

    @classmethod
    def record(cls, device: torch.device) -> _DeviceProbe:
        if device.type != "cuda":
            return cls(None)
        event = torch.cuda.Event()
        event.record(torch.cuda.default_stream(device))
        return cls(event)

    def done(self) -> bool:
        return self.event is None or self.event.query()


def _abort_collectives() -> None:
    """Abort the default group's communicators so kernels waiting on a dead peer return."""
    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    if abort is None or not dist.is_initialized():
        return
    try:
        abort()
    except Exception as exc:
        logger.debug("abort: %s", exc)


def _destroy_groups(abort: bool) -> None:
    """Tear down this process's groups (aborting them after a failure); in a thread, since a
    group whose peer is gone can block its teardown."""

    def teardown() -> None:
        if abort:
            _abort_collectives()
        if dist.is_initialized():
            dist.destroy_process_group()

    thread = threading.Thread(target=teardown, daemon=True)
    thread.start()
    thread.join(timeout=CLOSE_TIMEOUT_S)
