"""The W4A16 GEMV comparison of ``bench_quant_linear.py --gemv-sweep``: at 1, 2, 4 and 8 rows
of Llama-3-8B's shapes, the AutoAWQ-layout kernel as its launch table runs it (``old``) against
a grid of launch configs of the K-major GEMV (``triton_awq_gemv``, ``new``), with the bf16
GEMV for scale; then the ``triton_awq_gemv.CONFIGS`` entries where the new kernel wins over the
whole shape class."""

from __future__ import annotations

import itertools
import math

import bench_quant_linear as bench
import torch
from bench_gemv import rotate
from lmforge_torch_triton.ops import triton_awq, triton_awq_gemv
from lmforge_torch_triton.ops.triton_awq_gemv import GemvConfig
from lmforge_torch_triton.ops.triton_quant_common import shape_class

ROWS = (1, 2, 4, 8)


def gemv_configs(m: int) -> list[GemvConfig]:
    """Candidates at ``m`` rows (split_k set later). A warp covers 8 columns per 16 words of K
    block, so ``block_n`` runs from 16 (one row) or 8 (more) columns per warp, to 64 (32 words
    per thread, whose activations' loads and sums 8 columns share) or, at 8 rows, 32 (the
    rows' accumulators take registers too)."""
    most = 64 if m <= 4 else 32
    least = 16 if m == 1 else 8
    grid = itertools.product((16, 32, 64, 128, 256, 512), (1, 2, 4, 8), (False, True))
    return [GemvConfig(bn, 1, w, p) for bn, w, p in grid if least * w <= bn <= most * w]


def split_choices(config: GemvConfig, k: int, n: int, sms: int) -> list[int]:
    """Split counts that give about 1x, 2x and 4x the SMs in programs."""
    tiles = math.ceil(n / config.block_n)
    most = k // triton_awq_gemv.MAX_BLOCK_K
    return sorted({min(most, max(1, round(f * sms / tiles))) for f in (1, 2, 4)})


def gemv_tasks() -> list[tuple]:
    """``("gemv", config, shape name, rows)`` for every candidate and split. Shapes of one class
    (the launch table's key) get the same split counts, those of its narrowest."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    tasks = []
    for name, m in itertools.product(bench.SHAPES, ROWS):
        k, _ = bench.SHAPES[name]
        n = min(bench.SHAPES[other][1] for other in bench.SHAPES
                if _class(other) == _class(name))
        for cfg in gemv_configs(m):
            for split in split_choices(cfg, k, n, sms):
                tasks.append(("gemv", GemvConfig(cfg.block_n, split, cfg.num_warps,
                                                 cfg.prefetch), name, m))
    return tasks


def _class(name: str) -> str:
    k, n = bench.SHAPES[name]
    return shape_class(n, k)


def repacked(w: tuple) -> tuple:
    """An AutoAWQ weight tuple ``(qweight, qzeros, scales)`` with the GEMV's layout instead."""
    return triton_awq_gemv.repack(w[0], bench.GROUP), w[1], w[2]


def gemv_call(config: GemvConfig, m: int, k: int, w: tuple):
    x = torch.randn(m, k, device=bench.DEVICE, dtype=bench.BF16)
    return lambda: triton_awq_gemv.launch(x, *w, bench.GROUP, None, config)


def old_call(m: int, k: int, w: tuple):
    """The AutoAWQ-layout kernel at its launch table's config (whatever the GEMV's table)."""
    x = torch.randn(m, k, device=bench.DEVICE, dtype=bench.BF16)
    return lambda: triton_awq.awq_linear(x, *w, bench.GROUP)


def specialization(task: tuple) -> tuple:
    """What makes two tasks compile different kernels."""
    _, cfg, _, m = task
    return ("gemv", cfg.block_n, cfg.num_warps, cfg.prefetch, m, cfg.split_k > 1)


def compare(tasks: list[tuple], results: dict) -> None:
    """Time old, new (every config) and bf16 per shape and row count; print the best three new
    configs, then the suggested table entries."""
    print(f"\n=== W4A16 GEMV: AutoAWQ-layout kernel (old) against the K-major GEMV (new), "
          f"TB/s of 4-bit weights of {bench.COPY_TBS}")
    by_case: dict[tuple[str, int], list[GemvConfig]] = {}
    for _, cfg, name, m in tasks:
        by_case.setdefault((name, m), []).append(cfg)
    out = results.setdefault("gemv", {})
    for name in bench.SHAPES:
        k, n = bench.SHAPES[name]
        held = bench.copies("awq", k, n)
        dense = bench.copies("bf16", k, n)
        packed = [repacked(w) for w in held]
        for m in ROWS:
            t = time_case(m, k, n, held, dense, packed, by_case.get((name, m), []))
            out[f"{name} M={m}"] = t
            best = "  ".join(f"{us:.1f} us {bench.tbs('awq', k, n, us):.2f} TB/s {cfg}"
                             for us, cfg in t["new"][:3])
            print(f"{name:>8} M={m}: old {t['old']:.1f} us "
                  f"{bench.tbs('awq', k, n, t['old']):.2f} TB/s | bf16 {t['bf16']:.1f} us | "
                  f"new {best}")
        del held, dense, packed
    suggest(results)


def time_case(m: int, k: int, n: int, held: list, dense: list, packed: list,
              configs: list[GemvConfig]) -> dict:
    """``{"old": us, "bf16": us, "new": [(us, config tuple), ...] fastest first}``."""
    timed = []
    for cfg in configs:
        def make(w, cfg=cfg):
            return gemv_call(cfg, m, k, w)

        try:
            timed.append((rotate(make, packed), tuple(cfg.__dict__.values())))
        except Exception as exc:  # past the register or shared memory limits
            print(f"  skip {cfg}: {type(exc).__name__}")
    return {"old": rotate(lambda w: old_call(m, k, w), held),
            "bf16": rotate(lambda w: bench.op_call("gemv", m, k, n, w), dense),
            "new": sorted(timed)}


def suggest(results: dict) -> None:
    """Per row bucket and shape class: the new config with the least time summed over the
    class's shapes, as a ``CONFIGS`` entry where that sum beats the old kernel's."""
    print("\n=== triton_awq_gemv.CONFIGS entries (block_n, split_k, num_warps, prefetch); "
          "old/new summed over the class's shapes")
    sums: dict[tuple[int, str], dict[tuple, dict[str, float]]] = {}
    old: dict[tuple[int, str], float] = {}
    for case, t in results.get("gemv", {}).items():
        name, rows = case.split()
        key = (int(rows[2:]), _class(name))
        old[key] = old.get(key, 0.0) + t["old"]
        for us, cfg in t["new"]:
            sums.setdefault(key, {}).setdefault(cfg, {})[name] = us
    for key, by_cfg in sorted(sums.items()):
        names = {name for times in by_cfg.values() for name in times}
        complete = {cfg: sum(t.values()) for cfg, t in by_cfg.items() if set(t) == names}
        if not complete:
            continue
        cfg, new = min(complete.items(), key=lambda item: item[1])
        verdict = "new wins" if new < old[key] else "old wins: no entry"
        print(f"{key}: GemvConfig{cfg},  # old {old[key]:.1f} us, new {new:.1f} us: {verdict}")
