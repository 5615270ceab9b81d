"""What the serving profilers share: a free local port, and waiting for a server they started
(as a subprocess of themselves) to answer ``/health``."""

from __future__ import annotations

import http.client
import socket
import subprocess
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(port: int, server: subprocess.Popen, timeout_s: float,
                    interval_s: float = 0.2) -> None:
    """Return once the server on ``port`` answers ``/health`` with 200; exit with one sentence
    when ``server`` ends first or ``timeout_s`` passes (the caller stops the process)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise SystemExit(f"the server on port {port} did not answer /health")
        time.sleep(interval_s)
