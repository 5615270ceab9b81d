"""Requests through the whole server before it says it is ready.

The first request after start-up would otherwise pay for what is built on first use: the
tokenizer's tables (the detokenizer's byte table, the longest token's length), the tokenizer's
worker threads, the modules behind streamed responses, the engine process's first message of each
kind (measured on a CPU with a tiny model: 190 ms more than the second request with the engine in
a thread, 590 ms with the engine in its own process). The warm-up sends a few short requests
through the app itself, middleware, routes and engine included, then zeroes the server's and the
engine's metrics, so that the counters start at the first real request.

Last, the garbage collector is settled for serving (see :mod:`lmforge.engine.gc_tuning`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from ..engine.gc_tuning import settle_after_start_up
from .metrics import ServerMetrics

logger = logging.getLogger(__name__)

PROMPT = "Hello, how are you?"

# Each route users stream from, greedy and sampled, and one plain JSON answer.
REQUESTS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("/v1/completions", {"prompt": PROMPT, "stream": True, "temperature": 0}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": PROMPT}], "stream": True,
                              "temperature": 0.7, "top_p": 0.9, "top_k": 40}),
    ("/v1/completions", {"prompt": PROMPT, "temperature": 0}),
)
MAX_TOKENS = 4
# A warm-up request that takes longer is abandoned (and aborted): the server starts anyway.
TIMEOUT_S = 120.0


async def _send(app: Any, model: str, headers: dict[str, str]) -> list[str]:
    """Send the warm-up requests; returns a description of each one that failed."""
    transport = httpx.ASGITransport(app=app)
    failed = []
    async with httpx.AsyncClient(transport=transport, base_url="http://warm-up") as client:
        for path, body in REQUESTS:
            body = {**body, "model": model, "max_tokens": MAX_TOKENS, "ignore_eos": True}
            try:
                response = await asyncio.wait_for(
                    client.post(path, json=body, headers=headers, timeout=None), TIMEOUT_S)
            except asyncio.TimeoutError:
                failed.append(f"POST {path} (no answer within {TIMEOUT_S:.0f} s)")
                continue
            if response.status_code != 200:
                failed.append(f"POST {path} ({response.status_code}: {response.text[:200]})")
    return failed


def warm_up(app: Any) -> float:
    """Serve the warm-up requests through ``app`` (from :func:`create_app`), then zero the
    metrics; returns the seconds it took. A refused request (a plugin's hook may refuse it) is
    logged, not raised: the server still starts, with a slower first request."""
    state = app.state.server
    headers = {"Authorization": f"Bearer {min(state.api_keys)}"} if state.api_keys else {}
    started = time.perf_counter()
    failed = asyncio.run(_send(app, state.model_name, headers))
    for failure in failed:
        logger.warning("The start-up warm-up request %s failed; the first request may be slower.",
                       failure)
    state.metrics = ServerMetrics()
    reset = getattr(state.engine, "reset_counters", None)
    if reset is not None:
        reset()
    settle_after_start_up()
    return time.perf_counter() - started
