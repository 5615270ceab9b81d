"""``serve api_server`` (``--engine-process`` by default): the engine runs in a child process;
when it dies, the waiting clients and ``/health`` say so in one sentence, and the server leaves
nothing behind."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import httpx
from server_process import free_port, start_server, stop_server


def _engine_child(server_pid: int) -> int:
    """The engine process the server started (not multiprocessing's resource tracker)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == server_pid and "spawn_main" in cmdline and "resource_tracker" not in cmdline:
            return int(entry.name)
    raise AssertionError("the server has no engine process")


def test_engine_process_serves_and_its_crash_is_reported(tiny_llama_dir, tmp_path):
    port = free_port()
    server = start_server(
        [sys.executable, "-m", "lmforge.cli.main", "serve", "api_server", str(tiny_llama_dir),
         "--server-name", "127.0.0.1", "--server-port", str(port),
         "--model-name", "tiny", "--session-len", "4096"],
        port, tmp_path / "server.log")
    try:
        body = {"model": "tiny", "prompt": "Hello", "max_tokens": 4, "ignore_eos": True}
        reply = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 4
        engine_pid = _engine_child(server.process.pid)
        long = {**body, "max_tokens": 3000, "stream": True}
        with httpx.stream("POST", f"{server.url}/v1/completions", json=long, timeout=60) as r:
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            os.kill(engine_pid, signal.SIGKILL)
            rest = "\n".join(lines)
        assert '"finish_reason":"error"' in rest.replace(" ", "") or "exit code -9" in rest
        health = httpx.get(f"{server.url}/health", timeout=10)
        assert health.status_code == 503
        assert "exited unexpectedly (exit code -9)" in health.json()["message"]
    finally:
        stop_server(server)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{engine_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{engine_pid}/cmdline").exists() or not Path(
        f"/proc/{engine_pid}/cmdline").read_bytes()
