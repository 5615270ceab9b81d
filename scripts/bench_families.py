"""W1 (and W2) of the model families against each one's bandwidth floor: what
scripts/gpu_check_families.sh runs for the table of Qwen3-8B, Gemma-2-9B, Phi-3-mini,
Mixtral-8x7B and Qwen3-30B-A3B.

    python scripts/bench_families.py MODEL_DIR [MODEL_DIR ...] [--w2 NAME ...]
        [--tokenizer DIR] [--json OUT]

Each MODEL_DIR holds a config.json (benchmarks/models/*; random bf16 weights) and tokenizer
files. W1 is batch 1, 128 -> 512 tokens, run once untimed first; W2 is 1000 ShareGPT requests
offline, for the models named in ``--w2`` (folder names). The floor is the weight bytes one
decode step of one token must read (every layer with only its top-k experts, the final norm and
the LM head; the embedding table is only indexed) over ``--bandwidth`` (4.26 TB/s measured on
an H200). Targets: W1 at 85 % of the floor for the dense models, 75 % for Mixtral, 60 % for
Qwen3-30B-A3B.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from lmforge import PytorchEngineConfig, pipeline
from lmforge.bench.engine import model_vocab_size
from lmforge.bench.generation import profile_generation
from lmforge.bench.results import device_name
from lmforge.bench.throughput import profile_throughput
from lmforge.bench.workload import sharegpt_requests

TARGETS = {"MixtralForCausalLM": 0.75, "Qwen3MoeForCausalLM": 0.60}
DENSE_TARGET = 0.85


def bench_model(path: Path, args) -> dict:
    config = PytorchEngineConfig(dtype="bfloat16", load_format="dummy",
                                 max_batch_size=args.max_batch_size, max_prefill_token_num=8192)
    start = time.perf_counter()
    with pipeline(str(path), backend_config=config, log_level="WARNING") as pipe:
        c = pipe.engine.loop.engine.runner.model_info.config
        floor = args.bandwidth / (c.decode_parameters * 2)
        report = {"model": path.name, "architecture": c.architecture,
                  "load_s": time.perf_counter() - start,
                  "decode_weight_bytes": c.decode_parameters * 2, "floor_tok_s_batch1": floor,
                  "target_share": TARGETS.get(c.architecture, DENSE_TARGET)}
        vocab = model_vocab_size(pipe)
        report["w1"] = profile_generation(pipe, [1], 128, 512, vocab_size=vocab)[0]
        share = report["w1"]["output_tok_s"] / floor
        report["w1_share_of_floor"] = share
        print(f"W1 {path.name}: {report['w1']['output_tok_s']:.1f} tok/s, {share:.0%} of the "
              f"{floor:.1f} tok/s floor (target {report['target_share']:.0%})", flush=True)
        if path.name in args.w2:
            requests = sharegpt_requests(1000, seed=0, tokenizer_path=args.tokenizer)
            report["w2"] = profile_throughput(pipe, requests)
            print(f"W2 {path.name}: {report['w2']['request_s']:.2f} req/s", flush=True)
    torch.cuda.empty_cache()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--w2", nargs="*", default=[], help="model folder names to run W2 on")
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--tokenizer", default=None, help="measures the ShareGPT lengths (W2)")
    parser.add_argument("--bandwidth", type=float, default=4.26e12, help="bytes/s of the GPU")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    reports = {"device": device_name(), "models": []}
    for path in args.models:
        try:
            reports["models"].append(bench_model(path, args))
        except Exception as exc:  # one model failing still reports the others
            print(f"{path.name} failed: {type(exc).__name__}: {exc}", flush=True)
            reports["models"].append({"model": path.name, "error": f"{type(exc).__name__}: {exc}"})
        if args.json:
            Path(args.json).write_text(json.dumps(reports, indent=2) + "\n")


if __name__ == "__main__":
    main()
