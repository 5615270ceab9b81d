"""The engine loop: one thread that owns the :class:`LLMEngine` and runs its steps.

Front ends never touch the engine directly: they send commands (add a request, abort one, run a
function such as perplexity scoring) that the loop applies between steps. This keeps HTTP and
asyncio work off the thread that drives the model, and the model off the event loop.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from .llm_engine import LLMEngine
from .request import Request

logger = logging.getLogger(__name__)


class EngineLoop:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self.vocab_size = engine.vocab_size
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lmforge-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ front-end side

    def submit(self, request: Request) -> Future:
        """Queue a request; the future resolves once it is admitted (or holds its error)."""
        done: Future = Future()
        self._send("add", (request, done))
        return done

    def abort(self, request_id: int) -> None:
        self._send("abort", request_id)

    def call(self, fn: Callable[[LLMEngine], Any]) -> Future:
        """Run ``fn(engine)`` on the engine thread between steps."""
        done: Future = Future()
        self._send("call", (fn, done))
        return done

    def score(self, token_ids: list[int]) -> Future:
        """The mean negative log-likelihood of ``token_ids`` (see ``LLMEngine.score``)."""
        return self.call(lambda engine: engine.score(token_ids))

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()

    def reset_counters(self) -> Future:
        """Zero the engine's request and token counters (after the server's warm-up)."""
        return self.call(lambda engine: engine.counters.reset())

    @property
    def error(self) -> str | None:
        """Why the engine stopped taking requests (its runner died), or None."""
        return self.engine.dead

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._send("close", None)
        self._thread.join(timeout=30)

    def _send(self, kind: str, payload: Any) -> None:
        if self._closed.is_set():
            raise RuntimeError("The engine is closed.")
        self._commands.put((kind, payload))

    # ------------------------------------------------------------------ engine side

    def _apply(self, kind: str, payload: Any) -> bool:
        if kind == "add":
            request, done = payload
            try:
                self.engine.add_request(request)
            except Exception as exc:
                done.set_exception(exc)
            else:
                done.set_result(request.request_id)
        elif kind == "abort":
            self.engine.abort_request(payload)
        elif kind == "call":
            fn, done = payload
            try:
                done.set_result(fn(self.engine))
            except Exception as exc:
                done.set_exception(exc)
        elif kind == "close":
            return False
        return True

    def _drain(self, block: bool) -> bool:
        try:
            kind, payload = self._commands.get(block=block)
        except queue.Empty:
            return True
        if not self._apply(kind, payload):
            return False
        while True:
            try:
                kind, payload = self._commands.get_nowait()
            except queue.Empty:
                return True
            if not self._apply(kind, payload):
                return False

    def _run(self) -> None:
        running = True
        try:
            while running:
                running = self._drain(block=not self.engine.has_work)
                if running and self.engine.has_work:
                    try:
                        self.engine.step()
                    except Exception as exc:  # a failed step must not leave requests hanging
                        logger.exception("engine step failed")
                        self.engine.abort_all("error", f"{type(exc).__name__}: {exc}")
        finally:
            self._closed.set()
            self._fail_pending()
            self.engine.abort_all("abort", "the engine was closed")
            self.engine.runner.close()

    def _fail_pending(self) -> None:
        while True:
            try:
                kind, payload = self._commands.get_nowait()
            except queue.Empty:
                return
            if kind in ("add", "call"):
                payload[1].set_exception(RuntimeError("The engine is closed."))
