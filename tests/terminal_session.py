"""``lmforge`` in a pseudo-terminal, driven as a user types: the chat and api_client tests.

A module with a unique name, so test files in every folder import it unambiguously.
"""

from __future__ import annotations

import os
import re
import sys

import pytest

pexpect = pytest.importorskip("pexpect")  # a dev tool, absent where only the GPU tests run


# Keys as a terminal sends them.
UP, LEFT, CTRL_C, ENTER = "\x1b[A", "\x1b[D", "\x03", "\r"


def spawn_lmforge(*args: str, timeout: float = 120.0, env: dict | None = None) -> pexpect.spawn:
    """Start ``lmforge ARGS`` on an 80-column pseudo-terminal; its output is kept for asserts."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TERM": "xterm", "COLUMNS": "80", **(env or {})}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "lmforge.cli.main", *args],
        env=env,
        encoding="utf-8",
        timeout=timeout,
        dimensions=(40, 80),
    )
    child.transcript = []  # everything it printed, for failure messages and final checks
    child.logfile_read = _Recorder(child.transcript)
    return child


def reply_starting(word: str) -> str:
    """A pattern for an assistant reply whose text starts with ``word``."""
    return r"assistant>(?:\x1b\[[0-9;]*m)* +" + re.escape(word)


def output(child: pexpect.spawn) -> str:
    """Everything the child printed so far, escape sequences removed."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x01|\x02", "", "".join(child.transcript))


def finish(child: pexpect.spawn, timeout: float = 60.0) -> int:
    """Wait for the child to exit; its exit status."""
    child.expect(pexpect.EOF, timeout=timeout)
    child.close()
    return child.exitstatus


class _Recorder:
    def __init__(self, sink: list[str]) -> None:
        self.sink = sink

    def write(self, text: str) -> None:
        self.sink.append(text)

    def flush(self) -> None:
        pass
