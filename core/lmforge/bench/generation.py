"""Static-batch generation (LMDeploy's ``profile_generation``): for each batch size, a batch of
random prompts of ``input_len`` tokens each generating exactly ``output_len`` tokens.

Output throughput is generated tokens over the batch's wall time (prefill included); first-token
latency is the time until the batch streams its first token.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..messages import GenerationConfig
from .results import BenchReport
from .workload import synthetic_requests

COLUMNS = {
    "batch_size": "batch",
    "input_len": "in",
    "output_len": "out",
    "output_tok_s": "output tok/s",
    "first_token_latency_s": "first token (s)",
    "elapsed_s": "elapsed (s)",
}


@dataclass
class BatchTiming:
    """One timed batch: generated tokens, wall time and time to the first streamed token."""

    generated_tokens: int
    elapsed_s: float
    first_token_s: float


def run_batch(pipe, prompts: list[list[int]], output_len: int,
              on_token: Callable[[int], None] | None = None) -> BatchTiming:
    """Generate ``output_len`` tokens (EOS ignored, greedy) for every prompt at once, streaming.

    ``on_token`` receives the number of new tokens of each streamed increment.
    """
    cfg = GenerationConfig(max_new_tokens=output_len, ignore_eos=True, top_k=1)
    generated = [0] * len(prompts)
    first = None
    start = time.perf_counter()
    for resp in pipe.stream_infer(prompts, gen_config=cfg, do_preprocess=False):
        if first is None:
            first = time.perf_counter() - start
        new = resp.generate_token_len - generated[resp.index]
        generated[resp.index] = resp.generate_token_len
        if on_token is not None and new:
            on_token(new)
    elapsed = time.perf_counter() - start
    return BatchTiming(sum(generated), elapsed, first if first is not None else elapsed)


def profile_generation(pipe, batch_sizes: Sequence[int], input_len: int, output_len: int,
                       warmup: int = 1, seed: int = 0, vocab_size: int = 32000,
                       progress=None) -> list[dict]:
    """One result row per batch size (see :data:`COLUMNS`).

    ``warmup`` untimed batches of the same shape run first, since the first full run after
    loading is several times slower for every engine. ``progress`` is a rich ``Progress`` whose
    tasks show the tokens generated.
    """
    rows = []
    for batch_size in batch_sizes:
        prompts = [r.prompt_ids for r in
                   synthetic_requests(batch_size, input_len, output_len, vocab_size, seed)]
        for _ in range(warmup):
            run_batch(pipe, prompts, output_len)
        task = None
        if progress is not None:
            task = progress.add_task(f"batch {batch_size}", total=batch_size * output_len)
        timing = run_batch(pipe, prompts, output_len,
                           on_token=(lambda n, t=task: progress.advance(t, n)) if task is not None else None)
        rows.append({
            "batch_size": batch_size,
            "input_len": input_len,
            "output_len": output_len,
            "generated_tokens": timing.generated_tokens,
            "output_tok_s": timing.generated_tokens / timing.elapsed_s,
            "first_token_latency_s": timing.first_token_s,
            "elapsed_s": timing.elapsed_s,
        })
    return rows


def generation_report(model: str, device: str, settings: dict, rows: list[dict]) -> BenchReport:
    return BenchReport("generation", model, device, settings, dict(COLUMNS), rows)
