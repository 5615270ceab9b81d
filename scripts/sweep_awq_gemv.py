"""The W4A16 GEMV comparison of ``bench_quant_linear.py --gemv-sweep``: at 1, 2, 4 and 8 rows
of Llama-3-8B's shapes, the AutoAWQ-layout kernel as its launch table runs it (``old``) against
a grid of launch configs of the K-major GEMV (``triton_awq_gemv``, ``new``), with the bf16
GEMV for scale; then the ``triton_awq_gemv.CONFIGS`` entries where the new kernel wins over the
whole shape class."""

from __future__ import annotations

import itertools
import math

import bench_quant_linear as bench
import sweep_awq_common as common
import torch
from lmforge_torch_triton.ops import triton_awq_gemv
from lmforge_torch_triton.ops.triton_awq_gemv import GemvConfig

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
        n = common.narrowest_n(name)
        for cfg in gemv_configs(m):
            for split in split_choices(cfg, k, n, sms):
                tasks.append(("gemv", GemvConfig(cfg.block_n, split, cfg.num_warps,
                                                 cfg.prefetch), name, m))
    return tasks


def gemv_call(config: GemvConfig, m: int, k: int, w: tuple):
    x = torch.randn(m, k, device=bench.DEVICE, dtype=bench.BF16)
    return lambda: triton_awq_gemv.launch(x, *w, bench.GROUP, None, config)


def specialization(task: tuple) -> tuple:
    """What makes two tasks compile different kernels."""
    _, cfg, _, m = task
    return ("gemv", cfg.block_n, cfg.num_warps, cfg.prefetch, m, cfg.split_k > 1)


def compare(tasks: list[tuple], results: dict) -> None:
    """Time old, new (every config) and bf16 per shape and row count; print the best three new
    configs, then the suggested table entries."""
    by_case: dict[tuple[str, int], list[GemvConfig]] = {}
    for _, cfg, name, m in tasks:
        by_case.setdefault((name, m), []).append(cfg)
    common.compare("gemv", "W4A16 GEMV: AutoAWQ-layout kernel (old) against the K-major GEMV "
                   "(new)", ROWS, by_case, gemv_call, "gemv", results)
    common.suggest(results["gemv"], lambda m: m, "triton_awq_gemv.CONFIGS", "GemvConfig",
                   "block_n, split_k, num_warps, prefetch")
