"""The fused MoE kernel alone at Mixtral-8x7B's and Qwen3-30B-A3B's layer shapes (bf16): time per
call, the bandwidth its expert reads reach, and the PyTorch reference's time beside it.

    python scripts/bench_moe.py [--tokens 1 8 64 256 2048] [--sweep] [--json OUT]

A decode-sized call reads only the experts its tokens chose: the GB/s column is those experts'
bytes over the time (an H200 streams about 4.26 TB/s). The path says whether the call skipped
the alignment (``pairs``, decode sizes) or sorted its pairs by expert. ``--sweep`` times every
tile choice of :data:`SWEEP` as well and prints the fastest per shape, which is how
``pick_config`` in ``ops/triton_moe.py`` is to be set.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from lmforge_torch_triton.ops import reference_moe
from lmforge_torch_triton.ops.triton_moe import (
    MoEConfig,
    fused_moe_with_config,
    pick_config,
    use_pair_path,
)

# (hidden, expert intermediate, experts, top_k)
SHAPES = {"mixtral-8x7b": (4096, 14336, 8, 2), "qwen3-30b-a3b": (2048, 768, 128, 8)}
SWEEP = [MoEConfig(16, n, k, w, s) for n in (32, 64, 128) for k in (64, 128, 256)
         for w in (4, 8) for s in (2, 3, 4)] + [
    MoEConfig(m, n, k, w, 3) for m in (32, 64, 128) for n in (64, 128) for k in (32, 64)
    for w in (4, 8)]


def time_call(fn, repeats: int = 20) -> float:
    """Median seconds of ``fn()`` on the GPU, after two untimed calls."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def layer(shape, tokens: int, seed: int = 0):
    hidden, inter, experts, top_k = shape
    gen = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(tokens, hidden, device="cuda", generator=gen).to(torch.bfloat16)
    gate_up = (torch.randn(experts, 2 * inter, hidden, device="cuda", generator=gen)
               * hidden**-0.5).to(torch.bfloat16)
    down = (torch.randn(experts, hidden, inter, device="cuda", generator=gen)
            * inter**-0.5).to(torch.bfloat16)
    router = torch.randn(tokens, experts, device="cuda", generator=gen)
    weights, ids = reference_moe.moe_route(router, top_k, True)
    return x, gate_up, down, weights, ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 8, 64, 256, 2048])
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    for name, shape in SHAPES.items():
        hidden, inter, experts, top_k = shape
        expert_bytes = 3 * hidden * inter * 2
        for tokens in args.tokens:
            moe = layer(shape, tokens)
            chosen = int(torch.unique(moe[4]).numel())
            config = pick_config(moe[4].numel(), experts)
            kernel = time_call(lambda c=config, m=moe: fused_moe_with_config(*m, "silu", c))
            ref = time_call(lambda m=moe: reference_moe.fused_moe(*m), repeats=5)
            path = "pairs" if use_pair_path(tokens, top_k, experts) else "sorted"
            row = {"shape": name, "tokens": tokens, "path": path, "experts_read": chosen,
                   "kernel_us": kernel * 1e6, "reference_us": ref * 1e6,
                   "weight_gb_s": chosen * expert_bytes / kernel / 1e9, "config": vars(config)}
            if args.sweep:
                timed = []
                for candidate in SWEEP:
                    try:
                        timed.append((time_call(lambda c=candidate, m=moe: fused_moe_with_config(
                            *m, "silu", c), repeats=10), candidate))
                    except Exception as exc:  # a tile that does not fit the SM is skipped
                        print(f"  {candidate}: {type(exc).__name__}")
                best_time, best = min(timed, key=lambda t: t[0])
                row["best_us"], row["best_config"] = best_time * 1e6, vars(best)
            rows.append(row)
            best = f", best {row['best_us']:.1f} us {row['best_config']}" if args.sweep else ""
            print(f"{name} tokens {tokens:>5} ({path:>6}): {row['kernel_us']:9.1f} us "
                  f"({row['weight_gb_s']:7.1f} GB/s over {chosen} experts), reference "
                  f"{row['reference_us']:9.1f} us{best}", flush=True)
            del moe
            torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
