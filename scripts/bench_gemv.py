"""Decode-sized matmuls on a GPU: cuBLAS ``F.linear`` against the Triton GEMV kernels.

For Llama-3-8B's projections (bf16) and 1 to 32 token rows, prints microseconds per call and the
achieved bandwidth (weight bytes / time), then the sum over one batch-1 decode step (32 layers
and the LM head), both for the bare matmuls and for the fused ops the decoder calls against the
unfused kernels they replace. Every timing replays a CUDA graph of many calls that rotate over
enough weight copies that no call finds its weights in the 50 MB L2, as a captured decode step
runs them.

    python scripts/bench_gemv.py            # the chosen configs (triton_gemv.CONFIGS)
    python scripts/bench_gemv.py --sweep    # time a grid of launch configs per shape and rows
    python scripts/bench_gemv.py --step     # also one decode step's matmul chain, 32 real layers
"""

from __future__ import annotations

import argparse
import itertools
import math
import multiprocessing
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from lmforge_torch_triton.ops import triton_activation, triton_gemv, triton_rms_norm
from lmforge_torch_triton.ops.triton_gemv import GemvConfig

HIDDEN, INTER, VOCAB, LAYERS = 4096, 14336, 128256, 32
# name: (N, K)
SHAPES = {
    "qkv": (6144, HIDDEN),
    "o": (HIDDEN, HIDDEN),
    "gate_up": (2 * INTER, HIDDEN),
    "down": (HIDDEN, INTER),
    "lm_head": (VOCAB, HIDDEN),
}
ROWS = (1, 2, 4, 8, 16, 32)
DTYPE = torch.bfloat16
EPS = 1e-5
# Weight bytes each timed graph cycles through: several times the L2.
ROTATION_BYTES = 256 << 20


def weight_copies(n: int, k: int) -> list[torch.Tensor]:
    nbytes = n * k * DTYPE.itemsize
    count = max(2, math.ceil(ROTATION_BYTES / nbytes))
    return [torch.randn(n, k, device="cuda", dtype=DTYPE) * k**-0.5 for _ in range(count)]


def time_graph(calls: list[Callable[[], object]], replays: int = 5) -> float:
    """Microseconds per call: ``calls`` captured once in order into a CUDA graph, replayed."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # compile and warm up outside the capture
        for call in calls[: min(len(calls), 4)]:
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / (replays * len(calls))


def rotate(make: Callable[[torch.Tensor], Callable[[], object]],
           copies: list[torch.Tensor], calls: int = 24) -> float:
    per_copy = max(1, calls // len(copies))
    return time_graph([make(w) for w in copies] * per_copy)


def gbps(n: int, k: int, us: float) -> float:
    return n * k * DTYPE.itemsize / us / 1e3


def bench_linear() -> dict[str, tuple[float, float]]:
    """Bare matmuls at every row count; returns the M = 1 times (cuBLAS, Triton) per shape."""
    at_one = {}
    print(f"{'shape':>8} {'M':>3} | {'F.linear us':>11} {'GB/s':>6} | {'gemv us':>8} {'GB/s':>6}")
    for name, (n, k) in SHAPES.items():
        copies = weight_copies(n, k)
        for m in ROWS:
            x = torch.randn(m, k, device="cuda", dtype=DTYPE)
            ref = rotate(lambda w, x=x: lambda: F.linear(x, w), copies)
            ours = rotate(lambda w, x=x: lambda: triton_gemv.linear(x, w), copies)
            print(f"{name:>8} {m:>3} | {ref:>11.1f} {gbps(n, k, ref):>6.0f} | "
                  f"{ours:>8.1f} {gbps(n, k, ours):>6.0f}")
            if m == 1:
                at_one[name] = (ref, ours)
        del copies
    return at_one


# Fused SiLU-and-mul launch configs the bench compares with the split path, per row bucket.
FUSED_CANDIDATES = {
    "1": [GemvConfig(4, 2048, 4, 1, False), GemvConfig(8, 1024, 4, 1, False),
          GemvConfig(16, 512, 4, 1, False), GemvConfig(16, 1024, 8, 1, False),
          GemvConfig(32, 512, 8, 1, False)],
    "many": [GemvConfig(64, 128, 4, 3, True), GemvConfig(128, 128, 8, 3, True),
             GemvConfig(128, 64, 4, 4, True)],
}


def bench_fused() -> dict[str, tuple[float, float]]:
    """SiLU-and-mul + the down projection as the decoder calls it, against the unfused path
    (activation kernel + ``F.linear``), the split path (activation kernel + GEMV) and the fused
    kernel at every candidate config; returns the M = 1 times (unfused, op)."""
    at_one = {}
    print(f"\n{'op':>20} {'M':>3} | {'unfused':>7} {'split':>6} {'op us':>6} {'GB/s':>5} | "
          f"fused candidates us")
    for name in ("down",):
        n, k = SHAPES[name]
        copies = weight_copies(n, k)
        for m in (1, 2, 4, 8, 16):
            op, prologue = "silu_mul_linear", "silu"
            gate_up = torch.randn(m, 2 * k, device="cuda", dtype=DTYPE)

            def unfused(w, g=gate_up, mm=F.linear):
                return lambda: mm(triton_activation.silu_and_mul(g), w)

            def split(w, g=gate_up):
                return unfused(w, g, triton_gemv.linear)

            def fused(w, g=gate_up):
                return lambda: triton_gemv.silu_mul_linear(g, w)

            def candidate(w, cfg, g=gate_up):
                return lambda: triton_gemv.linear_with_config(g, w, cfg, silu_mul=True)
            ref, halves, ours = (rotate(make, copies) for make in (unfused, split, fused))
            tried = []
            for cfg in FUSED_CANDIDATES["1" if m == 1 else "many"]:
                label = f"({cfg.block_n}x{cfg.block_k} w{cfg.num_warps} s{cfg.num_stages})"
                try:
                    us = rotate(lambda w, cfg=cfg, make=candidate: make(w, cfg), copies)
                except Exception as exc:  # past the shared memory or register limits
                    tried.append(f"{type(exc).__name__} {label}")
                    continue
                tried.append(f"{us:.1f} {label}")
            print(f"{op + ' ' + name:>20} {m:>3} | {ref:>7.1f} {halves:>6.1f} {ours:>6.1f} "
                  f"{gbps(n, k, ours):>5.0f} | {'  '.join(tried)}  [{prologue}]")
            if m == 1:
                at_one[name] = (ref, ours)
        del copies
    return at_one


def step_sum(times: dict[str, tuple[float, float]], column: int) -> float:
    layer = sum(times[name][column] for name in ("qkv", "o", "gate_up", "down"))
    return LAYERS * layer + times["lm_head"][column]


def bench_step() -> None:
    """One batch-1 decode step's matmuls with 32 layers of distinct weights (16 GB), as one graph:
    the unfused chain the decoder ran before against the fused one (attention not included)."""
    def layer_weights() -> list[torch.Tensor]:
        return [torch.empty(n, k, device="cuda", dtype=DTYPE).normal_(0, k**-0.5)
                for n, k in (SHAPES[s] for s in ("qkv", "o", "gate_up", "down"))]

    layers = [layer_weights() for _ in range(LAYERS)]
    lm_head = torch.empty(VOCAB, HIDDEN, device="cuda", dtype=DTYPE).normal_(0, HIDDEN**-0.5)
    norm = torch.ones(HIDDEN, device="cuda", dtype=DTYPE)
    hidden = torch.randn(1, HIDDEN, device="cuda", dtype=DTYPE)

    def unfused() -> None:
        h, res = hidden, hidden
        for qkv, o, gate_up, down in layers:
            x, res = triton_rms_norm.rms_norm(h, norm, EPS, res)
            h = F.linear(F.linear(x, qkv)[:, :HIDDEN], o)
            x, res = triton_rms_norm.rms_norm(h, norm, EPS, res)
            h = F.linear(triton_activation.silu_and_mul(F.linear(x, gate_up)), down)
        F.linear(triton_rms_norm.rms_norm(h, norm, EPS, res)[0], lm_head)

    def fused() -> None:
        h, res = hidden, hidden
        for qkv, o, gate_up, down in layers:
            x, res = triton_rms_norm.rms_norm(h, norm, EPS, res)
            h = triton_gemv.linear(triton_gemv.linear(x, qkv)[:, :HIDDEN], o)
            x, res = triton_rms_norm.rms_norm(h, norm, EPS, res)
            h = triton_gemv.silu_mul_linear(triton_gemv.linear(x, gate_up), down)
        triton_gemv.linear(triton_rms_norm.rms_norm(h, norm, EPS, res)[0], lm_head)

    nbytes = (sum(w.numel() for ws in layers for w in ws) + lm_head.numel()) * DTYPE.itemsize
    for label, chain in (("unfused (rms_norm / silu kernels + F.linear)", unfused),
                         ("the decoder's ops: GEMV, SiLU fused per SILU_CONFIGS", fused)):
        us = time_graph([chain], replays=10)
        print(f"decode-step matmul chain, {label}: {us / 1000:.3f} ms, "
              f"{nbytes / us / 1e3:.0f} GB/s over {nbytes / 1e9:.2f} GB")


def sweep_configs() -> list[GemvConfig]:
    # The one-row loop has no shared-memory pipeline: stages do not change its code.
    configs = [GemvConfig(bn, bk, warps, 1, use_dot=False)
               for bn, bk, warps in itertools.product(
                   (1, 2, 4, 8, 16), (1024, 2048, 4096), (4, 8))]
    configs += [GemvConfig(bn, bk, warps, stages, use_dot=True)
                for bn, bk, warps, stages in itertools.product(
                    (16, 32, 64), (128, 256, 512), (4, 8), (3, 5))]
    return configs


def _compile(task: tuple[GemvConfig, int]) -> str | None:
    """Compile one config for one row count on a small weight (the shapes' specializations
    match: every N, K and stride of :data:`SHAPES` is a multiple of the blocks)."""
    cfg, m = task
    try:
        x = torch.zeros(m, HIDDEN, device="cuda", dtype=DTYPE)
        triton_gemv.linear_with_config(x, torch.zeros(256, HIDDEN, device="cuda", dtype=DTYPE),
                                       cfg)
        torch.cuda.synchronize()
    except Exception as exc:  # a config past the shared memory or register limits
        return f"{cfg} M={m}: {type(exc).__name__}"
    return None


def precompile(tasks: list[tuple[GemvConfig, int]]) -> None:
    """Fill Triton's on-disk cache from a pool of processes: compiling the grid one kernel at a
    time would take minutes of the GPU machine's time."""
    start = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(max(1, (os.cpu_count() or 2) - 2)) as pool:
        failed = [f for f in pool.map(_compile, tasks, chunksize=1) if f]
    print(f"compiled {len(tasks)} kernels in {time.monotonic() - start:.0f} s; "
          f"{len(failed)} failed: {failed}")


def sweep(budget_s: float, rows: tuple[int, ...]) -> None:
    """Time every config of :func:`sweep_configs` per shape and row count; print the best ones."""
    # One compiled variant per row class: multiples of 16 are specialized, 2, 4, 8 share one.
    variants = sorted({m if m % 16 == 0 else 2 for m in rows if m > 1})
    precompile([(cfg, m) for cfg in sweep_configs()
                for m in (((1,) if 1 in rows else ()) if not cfg.use_dot else variants)])
    deadline = time.monotonic() + budget_s
    for name, (n, k) in SHAPES.items():
        copies = weight_copies(n, k)
        for m in rows:
            x = torch.randn(m, k, device="cuda", dtype=DTYPE)
            ref = rotate(lambda w, x=x: lambda: F.linear(x, w), copies)
            results = []
            for cfg in sweep_configs():
                if cfg.use_dot != (m > 1) or time.monotonic() > deadline:
                    continue
                try:
                    us = rotate(lambda w, x=x, cfg=cfg: lambda: triton_gemv.linear_with_config(
                        x, w, cfg), copies)
                except Exception as exc:  # a config past the shared memory or register limits
                    print(f"  skip {cfg}: {type(exc).__name__}")
                    continue
                results.append((us, cfg))
            results.sort(key=lambda r: r[0])
            print(f"{name} M={m}: F.linear {ref:.1f} us ({gbps(n, k, ref):.0f} GB/s)")
            for us, cfg in results[:4]:
                print(f"    {us:8.1f} us {gbps(n, k, us):6.0f} GB/s  {cfg}")
        del copies
    if time.monotonic() > deadline:
        print(f"sweep stopped at its {budget_s:.0f} s budget; later shapes are partial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="time a grid of launch configs")
    parser.add_argument("--sweep-budget", type=float, default=150.0,
                        help="seconds the sweep may take before it stops trying configs")
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS),
                        help="row counts the sweep times")
    parser.add_argument("--step", action="store_true",
                        help="also time one decode step's matmul chain over 32 real layers")
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {DTYPE}")
    if args.sweep:
        sweep(args.sweep_budget, tuple(args.rows))
        return
    bare = bench_linear()
    fused = bench_fused()
    fused["o"] = bare["o"]
    print(f"\nper decode step at M=1 (32 layers + LM head): bare matmuls F.linear "
          f"{step_sum(bare, 0) / 1000:.3f} ms, GEMV {step_sum(bare, 1) / 1000:.3f} ms; "
          f"with norms/activation: unfused {step_sum(fused, 0) / 1000:.3f} ms, "
          f"fused {step_sum(fused, 1) / 1000:.3f} ms")
    if args.step:
        bench_step()


if __name__ == "__main__":
    main()
