"""Host time of one engine decode step against batch size, without a GPU.

The engine drives a runner whose forward costs nothing (it returns ready logits), so what is
timed is the engine's own work per step: scheduling, building the batch, gathering sampling
parameters, sampling a tiny vocabulary, and processing outputs (detokenization, stops, delivery).
On a GPU this work overlaps the previous step's kernels; once it is longer than a step's device
time, the GPU waits for the host.

  python scripts/profile_host_step.py [--batch-size 1 64 256 1024] [--steps 50] [--profile]

Prints, per batch size, the mean milliseconds per step of each phase and in total.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections import defaultdict

import torch
from lmforge.demo import demo_model_path
from lmforge.engine.llm_engine import LLMEngine
from lmforge.engine.request import Request
from lmforge.engine.scheduler import SchedulerConfig
from lmforge.messages import GenerationConfig
from lmforge.tokenizer import Tokenizer

# The logits' width: small, so the CPU's sampling arithmetic (which a GPU does in
# microseconds) stays out of the host figures; ids 256..511 are ordinary text tokens of the demo
# tokenizer, so detokenization does its real work.
VOCAB = 512


class FreeRunner:
    """A runner whose forward is free: logits that make every row pick a fresh text token."""

    device = torch.device("cpu")
    dtype = torch.float32
    accepts_prev_tokens = False

    def __init__(self) -> None:
        self.step = 0

    def execute(self, batch):
        rows = sum(batch.need_logits)
        logits = torch.zeros(rows, VOCAB)
        # Ordinary word tokens, different from step to step, so detokenization does real work.
        logits[:, 256 + (self.step * 7) % 256] = 1.0
        self.step += 1
        return logits

    def close(self) -> None:
        pass


def run(tokenizer: Tokenizer, batch_size: int, steps: int, profile: bool) -> dict[str, float]:
    config = SchedulerConfig(max_batch_size=batch_size, max_step_tokens=max(8192, batch_size),
                             block_size=64, num_blocks=batch_size * 8 + 8, max_session_len=4096)
    engine = LLMEngine(FreeRunner(), tokenizer, config, 4096, tokenizer.eos_token_ids, VOCAB)
    phases: dict[str, float] = defaultdict(float)
    for name in ("schedule", "build_batch"):
        target = engine.scheduler
        _time(target, name, phases)
    _time(engine, "_forward", phases, "launch")  # queue the forward, then the sampling
    _time(engine, "_sample", phases, "launch")
    _time(engine.outputs, "process", phases)
    cfg = GenerationConfig(max_new_tokens=steps + 8, ignore_eos=True)
    for i in range(batch_size):
        engine.add_request(Request([1, 256 + i % 256, 300, 400] * 16, cfg, lambda out: None))
    while engine.scheduler.waiting:  # prefill everyone, untimed
        engine.step()
    for _ in range(3):
        engine.step()
    phases.clear()
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    for _ in range(steps):
        engine.step()
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    total = time.perf_counter() - start
    engine.abort_all()
    result = {name: seconds / steps * 1e3 for name, seconds in phases.items()}
    result["step"] = total / steps * 1e3
    return result


def _time(obj, name: str, phases: dict[str, float], phase: str | None = None) -> None:
    method = getattr(obj, name)
    phase = phase or name.strip("_")

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            phases[phase] += time.perf_counter() - start

    setattr(obj, name, timed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 64, 256, 1024])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--profile", action="store_true", help="cProfile the largest batch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = Tokenizer.from_pretrained(demo_model_path())
    print(f"{'batch':>6} | {'schedule':>9} {'build':>7} {'launch':>7} {'process':>8} | "
          f"{'step ms':>8} {'us/seq':>7}")
    for size in args.batch_size:
        r = run(tokenizer, size, args.steps, args.profile and size == max(args.batch_size))
        print(f"{size:>6} | {r['schedule']:>9.3f} {r['build_batch']:>7.3f} {r['launch']:>7.3f} "
              f"{r['process']:>8.3f} | {r['step']:>8.3f} {r['step'] * 1e3 / size:>7.1f}")


if __name__ == "__main__":
    main()
