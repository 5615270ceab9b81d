"""A tensor-parallel worker: rank r of an engine, running what rank 0 broadcasts.

Started by the driver (:mod:`.workers`) as ``python -m lmforge_torch_triton.parallel.worker``
with torchrun's environment variables (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``). It joins, loads its shard, then loops over the driver's
commands until told to close. Whatever stops it early is written, as one line, to the pipe the
driver watches.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

import numpy as np
import torch
from lmforge.errors import LmforgeError

from ..runner import TorchModelRunner, resolve_device
from .messages import ALLOCATE, CLOSE, NUM_BLOCKS, STEP, Channel, decode_step
from .rendezvous import init_groups, join_from_env
from .workers import REPORT_FD_ENV, THREADS_ENV, WATCH_STDIN_ENV


def describe(exc: BaseException) -> str:
    """Why a worker stopped, in a few words the driver puts in its sentence."""
    if isinstance(exc, LmforgeError):
        return str(exc)
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "ran out of GPU memory (lower cache_max_entry_count or use more GPUs)"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def serve(runner: TorchModelRunner, channel: Channel) -> None:
    """Run the driver's commands until it says close."""
    while True:
        command = channel.receive()
        if command.kind == STEP:
            batch, prev_count = decode_step(command.args)
            if prev_count >= 0:
                batch.prev_tokens = channel.prev_tokens(None, prev_count)
            with torch.inference_mode():
                runner.forward(batch)
        elif command.kind == NUM_BLOCKS:
            block_size, fraction_bits = command.args.tolist()
            fraction = float(np.array([fraction_bits], dtype=np.int64).view(np.float64)[0])
            channel.minimum(runner.fitting_blocks(block_size, fraction))
        elif command.kind == ALLOCATE:
            runner.allocate_cache(*command.args.tolist())
        elif command.kind == CLOSE:
            return
        else:
            raise RuntimeError(f"unknown command {command.kind} from rank 0")


def _watch_driver() -> None:
    """The driver holds this process's stdin: at its end (the driver exited, however), stop."""

    def watch() -> None:
        sys.stdin.buffer.read()
        os._exit(1)

    threading.Thread(target=watch, name="lmforge-tp-driver-watch", daemon=True).start()


def main() -> None:
    # Terminal signals are for the driver, which shuts the workers down itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    level = os.environ.get("LMFORGE_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format=f"[tp rank {os.environ.get('RANK', '?')}] "
                        "%(levelname)s %(name)s: %(message)s")
    if os.environ.get(WATCH_STDIN_ENV) == "1":
        _watch_driver()
    report_fd = int(os.environ.get(REPORT_FD_ENV, "-1"))
    if os.environ.get(THREADS_ENV):
        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    try:
        me, model_info, engine_config = join_from_env()
        device = me.device(resolve_device(getattr(engine_config, "device", "auto")).type)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        me.mark("joined")
        init_groups(me, device)
        runner = TorchModelRunner(model_info, engine_config, rank=me)
        serve(runner, Channel(me.control, torch.distributed.group.WORLD, runner.device))
        runner.close()
        torch.distributed.destroy_process_group()
    except BaseException as exc:
        if report_fd >= 0:
            os.write(report_fd, describe(exc).encode()[:4000])
        logging.getLogger(__name__).debug("worker failed", exc_info=exc)
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
