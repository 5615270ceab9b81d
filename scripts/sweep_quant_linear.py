"""The launch-config sweep of ``bench_quant_linear.py --sweep``: a grid of configs per kernel
(W4A16, W8A8 int8 and fp8), Llama-3-8B shape and row count, each timed as the benchmark times
the ops, then the best three per case and suggested launch-table entries."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable

import bench_quant_linear as bench
import torch
from bench_gemv import rotate
from lmforge_torch_triton.ops import (
    triton_awq,
    triton_quant_act,
    triton_quant_common,
    triton_w8a8,
)
from lmforge_torch_triton.ops.triton_quant_common import MatmulConfig, split_k_slices


def sweep_configs(kernel: str, m: int) -> list[MatmulConfig]:
    """Candidates for ``kernel`` ("awq", "int8", "fp8") at ``m`` rows; split_k is set later.
    Decode sizes: tl.dot on 16-row tiles, and two elementwise one-row loops for comparison
    (their SASS has 2-3x the instructions per weight); more rows: tl.dot tiles."""
    block_ks = (64, 128) if kernel == "awq" else (128, 256)
    if m == 1:
        grid = itertools.product((64, 128, 256), block_ks, (4, 8), (3, 4))
        rows = [MatmulConfig(1, 256, 32, 1, 4, 2), MatmulConfig(1, 128, 16, 1, 4, 1)] \
            if kernel == "awq" else [MatmulConfig(1, 8, 1024, 1, 4, 1),
                                     MatmulConfig(1, 4, 2048, 1, 4, 1)]
        return rows + [MatmulConfig(16, bn, bk, 1, w, s) for bn, bk, w, s in grid
                       if (w == 8) == (bn * bk >= 256 * 128)]
    if m <= 64:
        grid = itertools.product((m,), (64, 128, 256), block_ks, (4, 8), (3, 4))
    else:
        grid = itertools.product((64, 128), (128, 256), block_ks, (4, 8), (3,))
    return [MatmulConfig(bm, bn, bk, 1, w, s) for bm, bn, bk, w, s in grid
            if (w == 4) == (bm * bn < 64 * 256)]


def split_choices(kernel: str, config: MatmulConfig, m: int, k: int, n: int,
                  sms: int) -> list[int]:
    """Split counts that give about 2x and 4x the SMs in programs (1 where the tiles do)."""
    block_m = 1 if config.block_m == 1 else max(16, config.block_m)
    tiles = math.ceil(m / block_m) * math.ceil(n / config.block_n)
    block_k = min(config.block_k, bench.GROUP) if kernel == "awq" else config.block_k
    most = max(1, k // block_k)
    wanted = {min(most, max(1, round(f * sms / tiles))) for f in (2, 4)}
    return sorted({split_k_slices(k, s, block_k)[1] for s in wanted})


def sweep_call(kernel: str, config: MatmulConfig, m: int, k: int, n: int, w) -> Callable:
    x = torch.randn(m, k, device=bench.DEVICE, dtype=bench.BF16)
    if kernel == "awq":
        return lambda: triton_awq.launch(x, *w, bench.GROUP, None, config)
    xq, xs = triton_quant_act.quantize_per_token(x, bench.INT8 if kernel == "int8" else bench.FP8)
    return lambda: triton_w8a8.launch(xq, xs, *w, None, bench.BF16, config)


def shape_class(name: str) -> str:
    k, n = bench.SHAPES[name]
    return triton_quant_common.shape_class(n, k)


def sweep_tasks(rows: tuple[int, ...]) -> list[tuple]:
    """``("config", kernel, config, shape name, rows)`` for every candidate and split. Shapes of
    one class (the launch tables' key) get the same split counts, those of its narrowest."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    tasks = []
    for kernel, name, m in itertools.product(("awq", "int8", "fp8"), bench.SHAPES, rows):
        k, _ = bench.SHAPES[name]
        n = min(bench.SHAPES[other][1] for other in bench.SHAPES
                if shape_class(other) == shape_class(name))
        for cfg in sweep_configs(kernel, m):
            for split in split_choices(kernel, cfg, m, k, n, sms):
                tasks.append(("config", kernel, MatmulConfig(
                    cfg.block_m, cfg.block_n, cfg.block_k, split, cfg.num_warps,
                    cfg.num_stages), name, m))
    return tasks


def sweep(tasks: list[tuple], budget_s: float, results: dict) -> None:
    """Time every candidate of :func:`sweep_tasks`; print the best three per case."""
    deadline = time.monotonic() + budget_s
    by_case: dict[tuple[str, str, int], list[MatmulConfig]] = {}
    for _, kernel, cfg, name, m in tasks:
        by_case.setdefault((kernel, name, m), []).append(cfg)
    for (kernel, name, m), configs in by_case.items():
        if time.monotonic() > deadline:
            print(f"sweep stopped at its {budget_s:.0f} s budget; later cases untimed")
            break
        k, n = bench.SHAPES[name]
        timed = time_case(kernel, m, k, n, configs)
        results.setdefault("sweep", {})[f"{kernel} {name} M={m}"] = [
            (us, tuple(cfg.__dict__.values())) for us, cfg in timed]
        print(f"{kernel} {name} M={m}: " + "  ".join(
            f"{us:.1f} us {bench.tbs(kernel, k, n, us):.2f} TB/s "
            f"{bench.tflops(m, k, n, us):.0f} TF {tuple(cfg.__dict__.values())}"
            for us, cfg in timed[:3]))


def suggest(results: dict) -> None:
    """Per kernel, row count and shape class: the config with the least time summed over the
    class's shapes (among those timed on all of them), as launch-table entries."""
    print("\n=== suggested table entries (summed over the class's shapes)")
    timings: dict[tuple[str, int, str], dict[tuple, dict[str, float]]] = {}
    for case, timed in results.get("sweep", {}).items():
        kernel, name, rows = case.split()
        key = (kernel, int(rows[2:]), shape_class(name))
        for us, cfg in timed:
            timings.setdefault(key, {}).setdefault(cfg, {})[name] = us
    for (kernel, m, cls), by_cfg in sorted(timings.items()):
        names = {name for times in by_cfg.values() for name in times}
        complete = {cfg: times for cfg, times in by_cfg.items() if set(times) == names}
        if not complete:
            continue
        cfg, times = min(complete.items(), key=lambda item: sum(item[1].values()))
        detail = ", ".join(f"{name} {us:.1f} us" for name, us in sorted(times.items()))
        print(f"{kernel:>4}  ({m}, \"{cls}\"): MatmulConfig{cfg},  # {detail}")


def time_case(kernel: str, m: int, k: int, n: int,
              configs: list[MatmulConfig]) -> list[tuple[float, MatmulConfig]]:
    """``(us, config)`` of every config that runs, fastest first."""
    held = bench.copies(kernel, k, n)
    timed = []
    for cfg in configs:
        def make(w, cfg=cfg):
            return sweep_call(kernel, cfg, m, k, n, w)

        try:
            timed.append((rotate(make, held, calls=12), cfg))
        except Exception as exc:  # a config past the shared memory or register limits
            print(f"  skip {cfg}: {type(exc).__name__}")
    return sorted(timed, key=lambda r: r[0])
