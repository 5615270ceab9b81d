"""Offline request throughput: every request submitted at once, the engine batches them as it
can, and the clock runs until the last one finishes (W2)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..messages import GenerationConfig
from .results import BenchReport
from .workload import BenchRequest

COLUMNS = {
    "num_requests": "requests",
    "elapsed_s": "elapsed (s)",
    "request_s": "req/s",
    "output_tok_s": "output tok/s",
    "total_tok_s": "total tok/s",
    "steps": "steps",
    "preemptions": "preempted",
}
# The engine's counters that the run's row reports as their growth over the run (row key:
# ``stats()`` key), where the engine reports them: steps and preemptions show what the K/V
# pool cost (a sequence preempted is computed again from its start).
_ENGINE_COUNTERS = {"steps": "steps_total", "preemptions": "preemptions_total"}


def profile_throughput(pipe, requests: list[BenchRequest],
                       on_done: Callable[[], None] | None = None,
                       response_format: Any = None) -> dict:
    """Run ``requests`` (EOS ignored, greedy) and return their figures (see :data:`COLUMNS`;
    steps and preemptions only where the engine counts them).

    ``on_done`` is called as each request finishes. ``response_format`` constrains every
    request (a request ends early when its grammar completes first).
    """
    prompts = [r.prompt_ids for r in requests]
    configs = [GenerationConfig(max_new_tokens=r.output_len, ignore_eos=True, top_k=1,
                                response_format=response_format)
               for r in requests]
    generated = [0] * len(requests)
    before = _engine_stats(pipe)
    start = time.perf_counter()
    for resp in pipe.stream_infer(prompts, gen_config=configs, do_preprocess=False):
        generated[resp.index] = resp.generate_token_len
        if resp.finish_reason is not None and on_done is not None:
            on_done()
    elapsed = time.perf_counter() - start
    after = _engine_stats(pipe)
    input_tokens = sum(len(p) for p in prompts)
    output_tokens = sum(generated)
    return {
        "num_requests": len(requests),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "elapsed_s": elapsed,
        "request_s": len(requests) / elapsed,
        "output_tok_s": output_tokens / elapsed,
        "total_tok_s": (input_tokens + output_tokens) / elapsed,
        **{key: after[name] - before[name] for key, name in _ENGINE_COUNTERS.items()
           if name in before and name in after},
    }


def _engine_stats(pipe) -> dict:
    stats = getattr(pipe.engine, "stats", None)
    return stats() if callable(stats) else {}


def load_response_format(value: str) -> dict:
    """A ``response_format`` given as JSON text or as the path of a JSON file."""
    from ..errors import ConfigError
    from ..structured import grammar_from_response_format

    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise ConfigError(f"Invalid value for --response-format: {value!r} is neither a JSON "
                              "object nor a JSON file.")
        text = path.read_text(encoding="utf-8")
    try:
        response_format = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"Invalid value for --response-format: not valid JSON ({exc}).") from exc
    grammar_from_response_format(response_format, "--response-format")
    return response_format


def throughput_report(model: str, device: str, settings: dict, row: dict) -> BenchReport:
    return BenchReport("throughput", model, device, settings, dict(COLUMNS), [row])
