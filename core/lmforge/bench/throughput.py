"""Offline request throughput: every request submitted at once, the engine batches them as it
can, and the clock runs until the last one finishes (W2)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..messages import GenerationConfig
from .results import BenchReport
from .workload import BenchRequest

COLUMNS = {
    "num_requests": "requests",
    "elapsed_s": "elapsed (s)",
    "request_s": "req/s",
    "output_tok_s": "output tok/s",
    "total_tok_s": "total tok/s",
}


def profile_throughput(pipe, requests: list[BenchRequest],
                       on_done: Callable[[], None] | None = None) -> dict:
    """Run ``requests`` (EOS ignored, greedy) and return their figures (see :data:`COLUMNS`).

    ``on_done`` is called as each request finishes.
    """
    prompts = [r.prompt_ids for r in requests]
    configs = [GenerationConfig(max_new_tokens=r.output_len, ignore_eos=True, top_k=1)
               for r in requests]
    generated = [0] * len(requests)
    start = time.perf_counter()
    for resp in pipe.stream_infer(prompts, gen_config=configs, do_preprocess=False):
        generated[resp.index] = resp.generate_token_len
        if resp.finish_reason is not None and on_done is not None:
            on_done()
    elapsed = time.perf_counter() - start
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
    }


def throughput_report(model: str, device: str, settings: dict, row: dict) -> BenchReport:
    return BenchReport("throughput", model, device, settings, dict(COLUMNS), [row])
