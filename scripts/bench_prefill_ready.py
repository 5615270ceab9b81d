"""Two engine measurements the throughput benchmarks do not make, on the GPU:

- ``prefill``: one forward step over a single prompt of ``--prefill-len`` tokens (8,192 by
  default), median of ``--repeat`` warm runs, for each ``--backend``, with the step's kernels
  ranked by time (where it goes);
- ``ready``: in a fresh process, the time from a call to ``pipeline()`` until the engine takes
  requests (CUDA context, weights loaded, K/V cache allocated, CUDA graphs captured), for
  turbomind from a folder written by ``lmforge convert`` moments before (so it sits in the page
  cache); the process's imports are timed apart.

    python scripts/bench_prefill_ready.py MODEL_DIR --backend pytorch turbomind --json out.json

MODEL_DIR holds a ``config.json`` (random weights, as in the other benchmarks) and tokenizer
files.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from lmforge import registry
from lmforge.engine.batch import ForwardBatch
from lmforge.model.loader import load_model_info

BLOCK = 64


def top_kernels(run, count: int = 8) -> list[tuple[str, float]]:
    """The ``count`` kernels that take longest in one call of ``run``: (name, ms)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    totals: dict[str, float] = collections.defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name] += event.device_time_total / 1e3
    return sorted(totals.items(), key=lambda kv: -kv[1])[:count]


def prefill_ms(model: str, backend: str, length: int, repeat: int
               ) -> tuple[float, list[tuple[str, float]]]:
    spec = registry.get_engine(backend)
    config = registry.load_object(spec.config_class)(
        dtype="bfloat16", load_format="dummy", max_prefill_token_num=length, max_batch_size=8,
        eager_mode=True)
    info = load_model_info(model, load_format="dummy", dtype="bfloat16")
    runner = registry.load_object(spec.runner)(info, config)
    blocks = -(-length // BLOCK)
    runner.allocate_cache(blocks + 1, BLOCK)
    ids = torch.randint(3, info.config.vocab_size, (length,)).tolist()
    batch = ForwardBatch(input_ids=ids, q_lens=[length], kv_lens=[length],
                         block_tables=[list(range(blocks))], need_logits=[True],
                         block_size=BLOCK)
    times = []
    for i in range(repeat + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        runner.execute(batch)
        torch.cuda.synchronize()
        if i:  # the first run warms up
            times.append((time.perf_counter() - start) * 1000)
    kernels = top_kernels(lambda: runner.execute(batch))
    runner.close()
    torch.cuda.empty_cache()
    return statistics.median(times), kernels


# Run in a fresh process: imports, then pipeline() until the engine is ready.
READY_CHILD = """
import json, sys, time
start = time.perf_counter()
from lmforge import TurbomindEngineConfig, pipeline
imported = time.perf_counter()
pipe = pipeline(sys.argv[1], backend_config=TurbomindEngineConfig(), log_level="WARNING")
ready = time.perf_counter()
pipe.close()
print(json.dumps({"imports_s": round(imported - start, 2), "ready_s": round(ready - imported, 2)}))
"""


def ready_s(model: str, workdir: Path) -> dict:
    from lmforge_turbomind_cuda.converted import write_converted

    dst = workdir / "converted"
    info = load_model_info(model, load_format="dummy", dtype="bfloat16")
    start = time.perf_counter()
    write_converted(info, dst, torch.bfloat16, device="cuda")
    convert = time.perf_counter() - start
    torch.cuda.empty_cache()
    child = subprocess.run([sys.executable, "-c", READY_CHILD, str(dst)], capture_output=True,
                           text=True)
    if child.returncode != 0:
        sys.exit(f"the engine-ready run failed:\n{child.stderr}")
    return {"convert_s": round(convert, 2), **json.loads(child.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--backend", nargs="+", default=["pytorch", "turbomind"])
    parser.add_argument("--prefill-len", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-ready", action="store_true", help="skip the engine-ready timing")
    parser.add_argument("--json")
    args = parser.parse_args()
    report = {"device": torch.cuda.get_device_name(), "prefill_len": args.prefill_len,
              "prefill_ms": {}, "prefill_kernels_ms": {}}
    for backend in args.backend:
        ms, kernels = prefill_ms(args.model, backend, args.prefill_len, args.repeat)
        report["prefill_ms"][backend] = round(ms, 2)
        report["prefill_kernels_ms"][backend] = [(name, round(t, 3)) for name, t in kernels]
        print(f"{backend}: one {args.prefill_len}-token prefill step {ms:.1f} ms "
              f"({args.prefill_len / ms * 1000:,.0f} tok/s); its longest kernels:", flush=True)
        for name, t in kernels:
            print(f"  {t:8.2f} ms  {name[:100]}", flush=True)
    if "turbomind" in args.backend and not args.no_ready:
        workdir = Path(tempfile.mkdtemp(prefix="lmforge-ready-"))
        try:
            report["turbomind_ready"] = ready_s(args.model, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        r = report["turbomind_ready"]
        print(f"turbomind: converted in {r['convert_s']} s; in a fresh process, engine ready "
              f"from the converted folder in {r['ready_s']} s (after {r['imports_s']} s of "
              "imports)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
