"""The W4A16 tensor-core comparison of ``bench_quant_linear.py --tc-sweep``: at 16 to 255 rows
of Llama-3-8B's shapes, the AutoAWQ-layout kernel as its launch table runs it (``old``) against
a grid of launch configs of the tensor-core matmul on the K-major repack (``triton_awq_tc``,
``new``), with bf16 cuBLAS for scale; then the ``triton_awq_tc.CONFIGS`` entries where the new
kernel wins over the whole shape class.

The grid is small on purpose (about a minute to compile and time on an H200 with 16 CPUs):
64 or 128 columns a program (one warpgroup's MMA rows, or two), all the rows in one tile up to
128, K steps of 64 or 128, 3 or 4 stages, and split counts that give about one and two
programs per SM."""

from __future__ import annotations

import itertools
import math

import bench_quant_linear as bench
import sweep_awq_common as common
import torch
from lmforge_torch_triton.ops import triton_awq_tc
from lmforge_torch_triton.ops.triton_awq_tc import TcConfig

# One row count per bucket of the launch table (255: the last before cuBLAS takes over).
ROWS = (16, 32, 64, 128, 255)


def tc_configs(m: int) -> list[TcConfig]:
    """Candidates at ``m`` rows (split_k set later): (columns, warps) of (64, 4), (128, 4) and
    (128, 8), every row in one tile up to 128."""
    block_m = min(128, max(16, 1 << (m - 1).bit_length()))
    grid = itertools.product(((64, 4), (128, 4), (128, 8)), (64, 128), (3, 4))
    return [TcConfig(bn, block_m, bk, 1, w, s) for (bn, w), bk, s in grid]


def split_choices(config: TcConfig, m: int, k: int, n: int, sms: int) -> list[int]:
    """Split counts that give about 1x and 2x the SMs in programs."""
    tiles = math.ceil(n / config.block_n) * math.ceil(m / config.block_m)
    most = k // config.block_k
    return sorted({min(most, max(1, round(f * sms / tiles))) for f in (1, 2)})


def tc_tasks() -> list[tuple]:
    """``("tc", config, shape name, rows)`` for every candidate and split, and
    ``("tc-old", None, shape name, rows)`` for the old kernel. Shapes of one class (the launch
    table's key) get the same split counts, those of its narrowest."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    tasks = []
    for name, m in itertools.product(bench.SHAPES, ROWS):
        tasks.append(("tc-old", None, name, m))
        k, _ = bench.SHAPES[name]
        n = common.narrowest_n(name)
        for cfg in tc_configs(m):
            for split in split_choices(cfg, m, k, n, sms):
                tasks.append(("tc", TcConfig(cfg.block_n, cfg.block_m, cfg.block_k, split,
                                             cfg.num_warps, cfg.num_stages), name, m))
    return tasks


def tc_call(config: TcConfig, m: int, k: int, w: tuple):
    x = torch.randn(m, k, device=bench.DEVICE, dtype=bench.BF16)
    return lambda: triton_awq_tc.launch(x, *w, bench.GROUP, None, config)


def run_task(task: tuple) -> None:
    """One call of a task of :func:`tc_tasks` (compiling its kernel into Triton's cache)."""
    kind, cfg, name, m = task
    k, n = bench.SHAPES[name]
    w = bench.make_weight("awq", k, n)
    call = common.old_call(m, k, w) if kind == "tc-old" else tc_call(cfg, m, k,
                                                                      common.repacked(w))
    call()


def specialization(task: tuple) -> tuple:
    """What makes two tasks compile different kernels."""
    kind, cfg, name, m = task
    if kind == "tc-old":
        return task
    return ("tc", cfg.block_n, cfg.block_m, cfg.block_k, cfg.num_warps, cfg.num_stages,
            m % cfg.block_m == 0, cfg.split_k > 1)


def compare(tasks: list[tuple], results: dict) -> None:
    """Time old, new (every config) and bf16 per shape and row count; print the best three new
    configs, then the suggested table entries."""
    by_case: dict[tuple[str, int], list[TcConfig]] = {}
    for kind, cfg, name, m in tasks:
        if kind == "tc":
            by_case.setdefault((name, m), []).append(cfg)
    common.compare("tc", "W4A16 tensor cores: AutoAWQ-layout kernel (old) against the K-major "
                   "swap-AB matmul (new)", ROWS, by_case, tc_call, "bf16", results)
    common.suggest(results["tc"], triton_awq_tc.row_bucket, "triton_awq_tc.CONFIGS",
                   "TcConfig", "block_n, block_m, block_k, split_k, num_warps, num_stages")
