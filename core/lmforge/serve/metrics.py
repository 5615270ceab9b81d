"""Prometheus metrics in the text exposition format, without a client-library dependency.

Engine-side numbers (queue depths, KV blocks, token totals) are read from ``engine.stats()`` when
``/metrics`` is scraped; the server itself records request latency and time to first token.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

PREFIX = "lmforge"

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# engine.stats() key -> (metric name, type, help)
ENGINE_METRICS = {
    "num_running": ("num_requests_running", "gauge", "Requests being decoded or prefilled."),
    "num_waiting": ("num_requests_waiting", "gauge", "Requests waiting to be scheduled."),
    "kv_blocks_used": ("kv_cache_blocks_used", "gauge", "KV cache blocks in use."),
    "kv_blocks_total": ("kv_cache_blocks_total", "gauge", "KV cache blocks in the pool."),
    "kv_tokens_total": ("kv_cache_tokens_total", "gauge", "Tokens the KV cache pool holds."),
    "prompt_tokens_total": ("prompt_tokens_total", "counter", "Prompt tokens processed."),
    "generation_tokens_total": ("generation_tokens_total", "counter", "Tokens generated."),
    "requests_total": ("engine_requests_total", "counter", "Requests the engine has finished."),
    "prefix_cache_hit_tokens": (
        "prefix_cache_hit_tokens_total",
        "counter",
        "Prompt tokens served from the prefix cache.",
    ),
    "steps_total": ("engine_steps_total", "counter", "Engine steps run."),
    "preemptions_total": ("preemptions_total", "counter", "Sequences preempted for KV space."),
    "failed_steps_total": (
        "engine_failed_steps_total",
        "counter",
        "Engine steps that raised (their sequences were retried alone; one that failed alone "
        "ended with an error).",
    ),
}


@dataclass
class Histogram:
    """A cumulative histogram with fixed upper bounds (seconds)."""

    name: str
    help: str
    buckets: Sequence[float]
    counts: list[int] = field(init=False)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def render(self) -> list[str]:
        full = f"{PREFIX}_{self.name}"
        lines = [f"# HELP {full} {self.help}", f"# TYPE {full} histogram"]
        running = 0
        for bound, n in zip([*map(_fmt, self.buckets), "+Inf"], self.counts, strict=True):
            running += n
            lines.append(f'{full}_bucket{{le="{bound}"}} {running}')
        lines.append(f"{full}_sum {_fmt(self.total)}")
        lines.append(f"{full}_count {self.count}")
        return lines


def _fmt(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else f"{float(value):.1f}"


class ServerMetrics:
    """The server's own counters and histograms; safe to update from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency = Histogram(
            "request_latency_seconds", "End-to-end request latency.", LATENCY_BUCKETS
        )
        self.ttft = Histogram("time_to_first_token_seconds", "Time to first token.", TTFT_BUCKETS)
        self.http_requests: dict[tuple[str, int], int] = {}

    def observe_request(self, latency: float, ttft: float | None) -> None:
        with self._lock:
            self.latency.observe(latency)
            if ttft is not None:
                self.ttft.observe(ttft)

    def count_http(self, endpoint: str, status: int) -> None:
        with self._lock:
            key = (endpoint, status)
            self.http_requests[key] = self.http_requests.get(key, 0) + 1

    def render(self, engine_stats: dict[str, float]) -> str:
        """The full ``/metrics`` page."""
        lines: list[str] = []
        for key, (name, kind, help_) in ENGINE_METRICS.items():
            if key not in engine_stats:
                continue
            full = f"{PREFIX}_{name}"
            lines += [f"# HELP {full} {help_}", f"# TYPE {full} {kind}"]
            lines.append(f"{full} {_number(engine_stats[key])}")
        full = f"{PREFIX}_http_requests_total"
        lines += [f"# HELP {full} HTTP requests by endpoint and status.", f"# TYPE {full} counter"]
        with self._lock:
            for (endpoint, status), n in sorted(self.http_requests.items()):
                lines.append(f'{full}{{endpoint="{endpoint}",status="{status}"}} {n}')
            lines += self.latency.render()
            lines += self.ttft.render()
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
