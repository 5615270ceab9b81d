"""Load against a running OpenAI-compatible server (lmforge's api_server, LMDeploy's, vLLM's):
streaming ``/v1/completions`` requests with exact output lengths, their prompts as text (what
users send: the server tokenizes them) or as token ids, sent all at once, with a concurrency cap,
or as a seeded Poisson process (W3).

Time to first token (TTFT) is measured to the first streamed chunk; inter-token latency (ITL) is
the gap between consecutive chunks, as other servers' benchmarks measure it; TPOT is a request's
time after its first chunk over its remaining tokens. Token counts come from the usage chunk.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import ConfigError
from .results import BenchReport, summarize
from .workload import BenchRequest

COLUMNS = {
    "url": "server",
    "num_requests": "requests",
    "failed": "failed",
    "elapsed_s": "elapsed (s)",
    "request_s": "req/s",
    "output_tok_s": "output tok/s",
    "ttft_p50_s": "TTFT p50 (s)",
    "ttft_p99_s": "TTFT p99 (s)",
    "itl_p50_s": "ITL p50 (s)",
    "itl_p99_s": "ITL p99 (s)",
}


@dataclass
class RequestTiming:
    """What one streamed request measured; ``error`` is set when it failed."""

    prompt_len: int
    output_tokens: int = 0
    ttft_s: float = 0.0
    latency_s: float = 0.0
    itl_s: list[float] = field(default_factory=list)
    error: str | None = None


async def served_model(client, base_url: str, api_key: str | None = None) -> str:
    """The name of the model the server at ``base_url`` serves."""
    import httpx

    try:
        response = await client.get(f"{base_url}/v1/models", headers=_auth(api_key))
        response.raise_for_status()
        return response.json()["data"][0]["id"]
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"No OpenAI-compatible server answers at {base_url} ({exc}); start "
            "`lmforge serve api_server` or fix the URL."
        ) from None


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def send_request(client, base_url: str, model: str, request: BenchRequest,
                       api_key: str | None = None) -> RequestTiming:
    """Stream one completion and time its chunks; the prompt goes as text when the request
    has it, else as token ids."""
    timing = RequestTiming(len(request.prompt_ids))
    body = {
        "model": model,
        "prompt": request.prompt_ids if request.prompt_text is None else request.prompt_text,
        "max_tokens": request.output_len,
        "ignore_eos": True,
        "top_k": 1,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = _auth(api_key)
    start = last = time.perf_counter()
    try:
        async with client.stream("POST", f"{base_url}/v1/completions", json=body,
                                 headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                timing.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return timing
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: "):])
                if chunk.get("usage"):
                    timing.output_tokens = chunk["usage"]["completion_tokens"]
                if not chunk.get("choices"):
                    continue
                now = time.perf_counter()
                if timing.ttft_s == 0.0:
                    timing.ttft_s = now - start
                else:
                    timing.itl_s.append(now - last)
                last = now
    except Exception as exc:  # a benchmark reports failed requests and goes on
        timing.error = f"{type(exc).__name__}: {exc}"
    timing.latency_s = time.perf_counter() - start
    return timing


def arrival_delays(count: int, request_rate: float | None, seed: int = 0) -> list[float]:
    """Seconds to wait before each request: zero for all at once, else exponential gaps (a
    Poisson process of ``request_rate`` requests per second) drawn with ``seed``."""
    if request_rate is None or request_rate == float("inf"):
        return [0.0] * count
    rng = random.Random(seed)
    return [rng.expovariate(request_rate) for _ in range(count)]


async def run_load(base_url: str, requests: list[BenchRequest], concurrency: int | None = None,
                   request_rate: float | None = None, seed: int = 0, api_key: str | None = None,
                   on_done: Callable[[], None] | None = None, timeout_s: float = 3600.0,
                   model: str | None = None, warmup: int = 0,
                   ) -> tuple[str, float, list[RequestTiming]]:
    """Send every request and return the served model's name, the wall time and the timings.

    ``warmup`` requests (the workload's last ones, 16 tokens each) run untimed first, so the
    server's first-use costs stay out of the figures.
    """
    import httpx

    base_url = base_url.rstrip("/")
    cap = concurrency or len(requests)
    limits = httpx.Limits(max_connections=cap, max_keepalive_connections=cap)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        model = model or await served_model(client, base_url, api_key)
        if warmup:
            short = [BenchRequest(r.prompt_ids, 16, r.prompt_text) for r in requests[-warmup:]]
            await asyncio.gather(*(send_request(client, base_url, model, r, api_key)
                                   for r in short))
        gate = asyncio.Semaphore(cap)

        async def one(request: BenchRequest) -> RequestTiming:
            async with gate:
                timing = await send_request(client, base_url, model, request, api_key)
            if on_done is not None:
                on_done()
            return timing

        tasks = []
        start = time.perf_counter()
        for request, delay in zip(requests, arrival_delays(len(requests), request_rate, seed),
                                  strict=True):
            if delay:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(request)))
        timings = await asyncio.gather(*tasks)
        return model, time.perf_counter() - start, list(timings)


def summarize_load(timings: list[RequestTiming], elapsed_s: float) -> dict:
    """Request and token throughput and TTFT / ITL / TPOT percentiles of the finished requests."""
    ok = [t for t in timings if t.error is None]
    output_tokens = sum(t.output_tokens for t in ok)
    input_tokens = sum(t.prompt_len for t in ok)
    tpot = [(t.latency_s - t.ttft_s) / (t.output_tokens - 1) for t in ok if t.output_tokens > 1]
    row = {
        "num_requests": len(timings),
        "completed": len(ok),
        "failed": len(timings) - len(ok),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "elapsed_s": elapsed_s,
        "request_s": len(ok) / elapsed_s,
        "output_tok_s": output_tokens / elapsed_s,
        "total_tok_s": (input_tokens + output_tokens) / elapsed_s,
    }
    for name, values in (("ttft", [t.ttft_s for t in ok]),
                         ("itl", [gap for t in ok for gap in t.itl_s]),
                         ("tpot", tpot),
                         ("latency", [t.latency_s for t in ok])):
        row.update({f"{name}_{key}_s": value for key, value in summarize(values).items()})
    errors = sorted({t.error for t in timings if t.error})
    if errors:
        row["errors"] = errors[:5]
    return row


def serve_report(model: str, settings: dict, rows: list[dict]) -> BenchReport:
    return BenchReport("serve", model, "server", settings, dict(COLUMNS), rows)
