"""Host time of one engine decode step against batch size, without a GPU.

The engine drives the ``pytorch`` engine's runner on the CPU device with a model whose forward
costs nothing (it returns ready logits), so what is timed is the host's work per step:
scheduling, building the batch, the runner's input preparation (for decode steps, the decode
graphs' static buffers filled exactly as on a GPU, with nothing captured or replayed; the eager
step inputs otherwise), gathering sampling parameters, sampling a tiny vocabulary, and
processing outputs (detokenization, stops, delivery). ``--runner free`` skips the runner's
input preparation. On a GPU this work overlaps the previous step's kernels; once it is longer
than a step's device time, the GPU waits for the host.

  python scripts/profile_host_step.py [--batch-size 1 64 256 1024] [--steps 50] [--profile]
                                      [--runner inputs|free] [--prompt-len 64]

Prints, per batch size, the mean milliseconds per step of each phase and in total ("runner" is
the part of "launch" spent in the runner's ``execute``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from unittest import mock

import torch
from lmforge.demo import demo_model_path
from lmforge.engine.llm_engine import LLMEngine
from lmforge.engine.request import Request
from lmforge.engine.scheduler import SchedulerConfig
from lmforge.messages import GenerationConfig, PytorchEngineConfig
from lmforge.model.loader import load_model_info
from lmforge.tokenizer import Tokenizer

# The logits' width: small, so the CPU's sampling arithmetic (which a GPU does in
# microseconds) stays out of the host figures; ids 256..511 are ordinary text tokens of the demo
# tokenizer, so detokenization does its real work.
VOCAB = 512
BLOCK_SIZE = 64
SESSION_LEN = 4096
# The runner's model: as small as a Llama goes (its weights and K/V pool are never used).
TINY_LLAMA = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=VOCAB,
                  hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=1,
                  max_position_embeddings=SESSION_LEN)


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


class FreeModel:
    """Stands in for the decoder: the logits of :class:`FreeRunner`, no K/V written."""

    def __init__(self) -> None:
        self.step = 0

    def fill(self, logits: torch.Tensor) -> None:
        logits.zero_()
        logits[:, 256 + (self.step * 7) % 256] = 1.0
        self.step += 1

    def forward(self, inputs, kv_caches) -> torch.Tensor:
        logits = torch.empty(len(inputs.logit_rows), VOCAB)
        self.fill(logits)
        return logits


class _Replay:
    """A captured graph's place: replaying it refills the static logits."""

    def __init__(self, model: FreeModel, logits: torch.Tensor) -> None:
        self.model, self.logits = model, logits

    def replay(self) -> None:
        self.model.fill(self.logits)


def input_runner(batch_size: int, num_blocks: int):
    """The pytorch engine's runner on the CPU device around a :class:`FreeModel`, with decode
    graphs whose static buffers are filled as on a GPU (nothing is captured or replayed)."""
    from lmforge_torch_triton.cuda_graph import DecodeGraphs
    from lmforge_torch_triton.runner import TorchModelRunner

    class HostGraphs(DecodeGraphs):
        def _capture(self, size):
            logits = torch.empty(size, VOCAB)
            return _Replay(model, logits), logits

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "config.json").write_text(json.dumps(TINY_LLAMA))
        info = load_model_info(folder, load_format="dummy")
        cfg = PytorchEngineConfig(device="cpu", dtype="float32", max_batch_size=batch_size,
                                  session_len=SESSION_LEN)
        runner = TorchModelRunner(info, cfg)
    runner.allocate_cache(num_blocks, BLOCK_SIZE)
    model = FreeModel()
    runner.model = model
    # No CUDA here: the graphs' memory pool is never used, since nothing is captured.
    with mock.patch("torch.cuda.graph_pool_handle", lambda: None):
        runner.graphs = HostGraphs(model.forward, runner.kv_caches, batch_size,
                                   -(-SESSION_LEN // BLOCK_SIZE), runner.device)
    return runner


def run(tokenizer: Tokenizer, batch_size: int, steps: int, profile: bool,
        runner_kind: str = "inputs", prompt_len: int = 64) -> dict[str, float]:
    step_tokens = max(8192, batch_size)
    # Enough new tokens that the first sequences still decode once the last have prefilled.
    max_new = steps + 8 + -(-batch_size * prompt_len // step_tokens)
    num_blocks = batch_size * -(-(prompt_len + max_new) // BLOCK_SIZE) + 8
    config = SchedulerConfig(max_batch_size=batch_size, max_step_tokens=step_tokens,
                             block_size=BLOCK_SIZE, num_blocks=num_blocks,
                             max_session_len=SESSION_LEN)
    runner = input_runner(batch_size, num_blocks) if runner_kind == "inputs" else FreeRunner()
    engine = LLMEngine(runner, tokenizer, config, SESSION_LEN, tokenizer.eos_token_ids, VOCAB)
    phases: dict[str, float] = defaultdict(float)
    for name in ("schedule", "build_batch"):
        target = engine.scheduler
        _time(target, name, phases)
    _time(engine, "_forward", phases, "launch")  # queue the forward, then the sampling
    _time(engine, "_sample", phases, "launch")
    _time(engine.outputs, "process", phases)
    _time(runner, "execute", phases, "runner")
    cfg = GenerationConfig(max_new_tokens=max_new, ignore_eos=True)
    for i in range(batch_size):
        prompt = ([1, 256 + i % 256, 300, 400] * -(-prompt_len // 4))[:prompt_len]
        engine.add_request(Request(prompt, cfg, lambda out: None))
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
    assert engine.scheduler.num_running == batch_size, "the batch was not full while timed"
    if runner_kind == "inputs":
        assert runner.graphs.replays >= steps, "decode steps did not take the graph path"
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
    parser.add_argument("--runner", choices=["inputs", "free"], default="inputs",
                        help="inputs: the pytorch runner's input preparation on the CPU around "
                        "a free model (default); free: a runner that prepares nothing")
    parser.add_argument("--prompt-len", type=int, default=64,
                        help="prompt tokens per sequence: the block tables' width")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = Tokenizer.from_pretrained(demo_model_path())
    print(f"{'batch':>6} | {'schedule':>9} {'build':>7} {'launch':>7} {'(runner)':>8} "
          f"{'process':>8} | {'step ms':>8} {'us/seq':>7}")
    for size in args.batch_size:
        r = run(tokenizer, size, args.steps, args.profile and size == max(args.batch_size),
                args.runner, args.prompt_len)
        print(f"{size:>6} | {r['schedule']:>9.3f} {r['build_batch']:>7.3f} {r['launch']:>7.3f} "
              f"{r['runner']:>8.3f} {r['process']:>8.3f} | {r['step']:>8.3f} "
              f"{r['step'] * 1e3 / size:>7.1f}")


if __name__ == "__main__":
    main()
