"""Watches the worker processes and turns a death into one sentence, never a hang.

Each worker holds the write end of a pipe: it writes why it failed before it exits, and its exit
closes the pipe. The monitor thread waits on the read ends; when one closes outside a shutdown,
it names the rank and the cause (the worker's own message, the signal that killed it, or its exit
status) and calls ``on_failure``.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

# After one rank dies, the others fail in collectives with it: wait this long for a death that
# names the first cause rather than a broken connection.
SETTLE_S = 0.5
_CONSEQUENCES = ("closed by peer", "Connection reset", "NCCL", "communicator", "timed out")


def exit_cause(returncode: int | None, message: str) -> str:
    """Why a worker stopped, as the end of a sentence."""
    if message:
        return f"failed: {message.strip().rstrip('.')}"
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with status {returncode}"


class Monitor:
    """Calls ``on_failure(rank, cause)`` once, for the first worker that stops unasked."""

    def __init__(self, procs: dict[int, subprocess.Popen], reports: dict[int, int],
                 on_failure: Callable[[int, str], None]) -> None:
        self.procs = procs
        self.on_failure = on_failure
        self.closing = False
        self._messages = {rank: b"" for rank in reports}
        self._open = dict(reports)
        self._selector = selectors.DefaultSelector()
        for rank, fd in reports.items():
            self._selector.register(fd, selectors.EVENT_READ, rank)
        self._wake_r, self._wake_w = os.pipe()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="lmforge-tp-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the workers are being shut down on purpose)."""
        self.closing = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def _run(self) -> None:
        dead: list[tuple[int, str]] = []
        deadline = None
        while self._open and not self.closing:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            for key, _ in self._selector.select(timeout):
                rank = key.data
                if rank is None:
                    continue
                data = os.read(key.fd, 4096)
                if data:
                    self._messages[rank] += data
                    continue
                self._selector.unregister(key.fd)
                os.close(self._open.pop(rank))
                dead.append((rank, self._cause(rank)))
                deadline = deadline or time.monotonic() + SETTLE_S
            if deadline is not None and (time.monotonic() >= deadline or not self._open):
                break
        self._selector.close()
        for fd in self._open.values():
            os.close(fd)
        if dead and not self.closing:
            first = next((d for d in dead if not any(c in d[1] for c in _CONSEQUENCES)), dead[0])
            self.on_failure(*first)

    def _cause(self, rank: int) -> str:
        proc = self.procs[rank]
        try:
            returncode = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # closed its pipe but lives on: stop it
            proc.kill()
            returncode = proc.wait()
        return exit_cause(returncode, self._messages[rank].decode(errors="replace"))
