"""Server processes for the serving tests: real uvicorn on 127.0.0.1.

A module with a unique name, so test files import it unambiguously (several test folders have
a ``conftest.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).parent
TINY_SESSION_LEN = 256  # the session length of the ``tiny_server`` fixture


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(
    args: list[str], port: int, log: Path, timeout: float = 120.0, env: dict | None = None
) -> Server:
    """Start a server process and wait for its ``/health``; fail with its output if it dies."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
    with open(log, "wb") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT, cwd=HERE, env=env)
    server = Server(f"http://127.0.0.1:{port}", process, log)  # loopback, whatever it binds
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1.0).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.1)
    stop_server(server)
    pytest.fail(f"server did not start within {timeout} s:\n{server.output()}")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def fake_server_process(tmp_path: Path, *extra: str) -> Iterator[Server]:
    port = free_port()
    args = [sys.executable, str(HERE / "fake_server.py"), str(port), *extra]
    # Installed plugins stay out: the fake server registers its own test plugin.
    server = start_server(args, port, tmp_path / "server.log", env={"LMFORGE_LOAD_PLUGINS": ""})
    yield server
    stop_server(server)


def lmforge_server(tmp_path: Path, *args: str, timeout: float = 300.0) -> Iterator[Server]:
    """``lmforge serve api_server ARGS`` on a free port."""
    port = free_port()
    cmd = [sys.executable, "-m", "lmforge.cli.main", "serve", "api_server", *args]
    cmd += ["--server-name", "127.0.0.1", "--server-port", str(port)]
    server = start_server(cmd, port, tmp_path / "server.log", timeout)
    yield server
    stop_server(server)
