"""W1, W4 and W2 on one engine, loaded once: what scripts/gpu_check_tp.sh runs per tp size.

    python scripts/bench_tp.py MODEL_DIR --tp 2 [--workloads w1 w4 w2] [--w4-batch 1 16 64 256]
        [--tokenizer DIR] [--json OUT]

MODEL_DIR holds a config.json (random bf16 weights) and tokenizer files. The workloads are
GPU.md's: W1 batch 1, 128 -> 512 tokens; W4 static batches, 128 -> 128; W2 1000 ShareGPT
requests offline. Each W1/W4 batch runs once untimed first. One engine serves them all, so a
70B model loads once; the run at every tp size is the same, so their ratios compare like with
like. The JSON also records the bandwidth floor: the weight bytes each GPU reads per decode step
over ``--bandwidth`` (4.26 TB/s measured on an H200).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from lmforge import PytorchEngineConfig, pipeline
from lmforge.bench.engine import model_vocab_size
from lmforge.bench.generation import profile_generation
from lmforge.bench.results import device_name
from lmforge.bench.throughput import profile_throughput
from lmforge.bench.workload import sharegpt_requests

sys.path.insert(0, str(Path(__file__).parent))
from profile_decode import streamed_weight_bytes  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--tp", type=int, default=1)
    parser.add_argument("--workloads", nargs="+", default=["w1", "w4", "w2"],
                        choices=["w1", "w4", "w2"])
    parser.add_argument("--w4-batch", nargs="+", type=int, default=[1, 16, 64, 256])
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--tokenizer", default=None, help="measures the ShareGPT lengths (W2)")
    parser.add_argument("--bandwidth", type=float, default=4.26e12, help="bytes/s per GPU")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    config = PytorchEngineConfig(tp=args.tp, dtype="bfloat16", load_format="dummy",
                                 max_batch_size=args.max_batch_size, max_prefill_token_num=8192)
    start = time.perf_counter()
    report = {"model": Path(args.model).name, "tp": args.tp, "device": device_name()}
    with pipeline(args.model, backend_config=config, log_level="WARNING") as pipe:
        runner = pipe.engine.loop.engine.runner
        report["load_s"] = time.perf_counter() - start
        step_bytes = streamed_weight_bytes(runner)
        report["weight_bytes_per_gpu"] = step_bytes
        report["floor_tok_s_batch1"] = args.bandwidth / step_bytes
        vocab = model_vocab_size(pipe)
        if "w1" in args.workloads:
            report["w1"] = profile_generation(pipe, [1], 128, 512, vocab_size=vocab)[0]
            _say(args, "W1", f"{report['w1']['output_tok_s']:.1f} tok/s")
        if "w4" in args.workloads:
            report["w4"] = profile_generation(pipe, args.w4_batch, 128, 128, vocab_size=vocab)
            _say(args, "W4", ", ".join(f"batch {r['batch_size']} {r['output_tok_s']:.0f} tok/s"
                                       for r in report["w4"]))
        if "w2" in args.workloads:
            requests = sharegpt_requests(1000, seed=0, tokenizer_path=args.tokenizer)
            report["w2"] = profile_throughput(pipe, requests)
            _say(args, "W2", f"{report['w2']['request_s']:.1f} req/s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


def _say(args, workload: str, text: str) -> None:
    print(f"{workload} tp={args.tp} {Path(args.model).name}: {text}", flush=True)


if __name__ == "__main__":
    main()
