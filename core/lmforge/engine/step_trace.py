"""A per-step trace of the engine, written as JSON lines when ``LMFORGE_STEP_TRACE`` names a file.

Whether a batch stays full under a waiting queue, and when requests actually reach the engine,
cannot be told from a client's latencies: a thin batch looks the same whether the scheduler left
slots empty, the steps stalled, or the requests were still on their way through HTTP and
tokenization. The trace answers it from the engine's side, the same way in a server's engine
process (the variable is inherited) and in an offline run. ``scripts/summarize_step_trace.py``
reads it.

Lines: ``["add", t, prompt_len]`` when a request reaches the engine, and ``["step", t, dt, rows,
prompt_tokens, running, waiting]`` after each step (``t`` on ``time.perf_counter``, seconds;
``rows`` and ``prompt_tokens`` as the scheduler planned the step; ``running`` and ``waiting``
after it).
"""

from __future__ import annotations

import json
import os
import time

ENV = "LMFORGE_STEP_TRACE"


class StepTrace:
    """Appends trace lines to ``path``; line-buffered, so a killed server loses at most one."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 (process-long)
        self._rows = self._prompt_tokens = 0

    @classmethod
    def from_env(cls) -> StepTrace | None:
        path = os.environ.get(ENV)
        return cls(path) if path else None

    def added(self, prompt_len: int) -> None:
        self._write(["add", time.perf_counter(), prompt_len])

    def planned(self, num_new_tokens: list[int]) -> None:
        self._rows = len(num_new_tokens)
        self._prompt_tokens = sum(n for n in num_new_tokens if n > 1)

    def stepped(self, start: float, running: int, waiting: int) -> None:
        now = time.perf_counter()
        self._write(["step", now, now - start, self._rows, self._prompt_tokens, running, waiting])
        self._rows = self._prompt_tokens = 0

    def _write(self, line: list) -> None:
        self._file.write(json.dumps(line) + "\n")
