"""Quantized linears on a GPU: W4A16 (AutoAWQ layout) and W8A8 (int8, fp8) against bf16.

For Llama-3-8B's projections at decode sizes (M = 1, 16, 64, 256 token rows) and one prefill
step (M = 8,192), prints microseconds per call of bf16 (cuBLAS ``F.linear``; the Triton GEMV up
to 16 rows), W4A16 (``triton_awq.linear_awq``, the decoder's op), and W8A8 int8 and fp8
(``triton_w8a8``: the matmul on quantized rows, and with the activation's quantization
included), with the achieved weight bandwidth (TB/s, against the 4.26 TB/s copy ceiling of an
H200) or TFLOP/s (against ~790 bf16, ~1,580 int8/fp8 dense). Then the choices behind the launch
tables: SiLU-and-mul or the input's quantization inside the matmul at 1 and 16 rows, W4A16's
fused kernel against dequantize + cuBLAS at large M, and W8A8's Triton kernel against cuBLAS
(``torch._int_mm``, ``torch._scaled_mm``). It ends with a short table: the matmul time of one
decode step (32 layers + the bf16 LM head) and of one prefill step per format.
Decode timings replay a CUDA graph of calls that rotate over enough weight copies that none is
found in the 50 MB L2, as a captured decode step runs them.

    python scripts/bench_quant_linear.py                # the tables' choices (about a minute)
    python scripts/bench_quant_linear.py --sweep        # first sweep_quant_linear.py's grid
    python scripts/bench_quant_linear.py --gemv-sweep   # first old vs new W4A16 GEMV, 1-8 rows
    python scripts/bench_quant_linear.py --tc-sweep     # first old vs tensor-core W4A16, 16-255
    python scripts/bench_quant_linear.py --json F.json  # also every timing as JSON
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_gemv import rotate
from lmforge.model.linear import AWQLinear
from lmforge_torch_triton.ops import (
    triton_activation,
    triton_awq,
    triton_awq_gemv,
    triton_gemv,
    triton_quant_act,
    triton_w8a8,
)
from lmforge_torch_triton.ops.triton_quant_common import LARGE, MatmulConfig, shape_class

LAYERS, HIDDEN, VOCAB = 32, 4096, 128256
# name: (K, N)
SHAPES = {"qkv": (4096, 6144), "o": (4096, 4096), "gate_up": (4096, 28672),
          "down": (14336, 4096)}
DECODE_ROWS = (1, 16, 64, 256)
PREFILL_ROWS = 8192
# Row counts of the large-M comparisons.
LARGE_ROWS = (256, 1024, 2048, PREFILL_ROWS)
GROUP = 128
BF16 = torch.bfloat16
INT8, FP8 = torch.int8, torch.float8_e4m3fn
COPY_TBS, BF16_TFLOPS, INT8_TFLOPS = 4.26, 790.0, 1580.0
ROTATION_BYTES = 256 << 20
DEVICE = "cuda"
FORMATS = ("bf16", "awq", "int8", "fp8")


def weight_bytes(fmt: str, k: int, n: int) -> int:
    if fmt == "bf16":
        return 2 * k * n
    if fmt == "awq":  # 4-bit weights, a 4-bit zero and a 16-bit scale per group and column
        return k * n // 2 + (k // GROUP) * (n // 2 + 2 * n)
    return k * n + 4 * n


def make_weight(fmt: str, k: int, n: int):
    """One random weight of ``fmt`` (its values do not matter to the timing)."""
    dev = DEVICE
    if fmt == "bf16":
        return torch.randn(n, k, device=dev, dtype=BF16) * k**-0.5
    if fmt == "awq":
        words = dict(dtype=torch.int32, device=dev)
        return (torch.randint(-2**31, 2**31 - 1, (k, n // 8), **words),
                torch.randint(-2**31, 2**31 - 1, (k // GROUP, n // 8), **words),
                (torch.rand(k // GROUP, n, device=dev) * 1e-3).to(BF16))
    scale = torch.rand(n, device=dev) * 1e-3
    if fmt == "int8":
        return torch.randint(-127, 128, (n, k), device=dev, dtype=INT8), scale
    return torch.randn(n, k, device=dev).to(FP8), scale


def copies(fmt: str, k: int, n: int) -> list:
    count = max(2, math.ceil(ROTATION_BYTES / weight_bytes(fmt, k, n)))
    return [make_weight(fmt, k, n) for _ in range(count)]


def quantized_rows(qdtype: torch.dtype, m: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(m, k, device=DEVICE, dtype=BF16)
    return triton_quant_act.quantize_per_token(x, qdtype)


def time_eager(call: Callable[[], object], iters: int = 5) -> float:
    """Microseconds per call, launched from Python (prefill-sized calls: launch cost is noise)."""
    call()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        call()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / iters


def op_call(fmt: str, m: int, k: int, n: int, w, with_quant: bool = False) -> Callable:
    """One ``m``-row call of ``fmt`` ("bf16", "gemv", "awq", "int8", "fp8") on weight ``w``
    through the op the decoder calls; W8A8 on quantized rows, or quantizing them too."""
    x = torch.randn(m, k, device=DEVICE, dtype=BF16)
    if fmt == "bf16":
        return lambda: F.linear(x, w)
    if fmt == "gemv":
        return lambda: triton_gemv.linear(x, w)
    if fmt == "awq":  # the decoder's route: the GEMV's layout too where its table runs it
        linear = triton_awq_gemv.with_gemv_layout(AWQLinear(*w, GROUP))
        return lambda: triton_awq.linear_awq(x, linear)
    if with_quant:
        return lambda: triton_w8a8.w8a8_quant_linear(x, *w)
    xq, x_scale = quantized_rows(INT8 if fmt == "int8" else FP8, m, k)
    return lambda: triton_w8a8.w8a8_linear(xq, x_scale, *w)


def time_rows(fmt: str, m: int, k: int, n: int, weights: list, with_quant: bool = False):
    """Microseconds of one ``m``-row call of ``fmt`` (rotating ``weights`` at decode sizes)."""
    def make(w):
        return op_call(fmt, m, k, n, w, with_quant)

    if m >= PREFILL_ROWS:
        return time_eager(make(weights[0]))
    return rotate(make, weights)


def tbs(fmt: str, k: int, n: int, us: float) -> float:
    return weight_bytes(fmt, k, n) / us / 1e6


def tflops(m: int, k: int, n: int, us: float) -> float:
    return 2 * m * k * n / us / 1e6


def bench_shapes(results: dict) -> None:
    """Every format at every row count and shape, with the activation quantization included
    for W8A8 as the ``+q`` columns (a decoder quantizes o_proj's and down's input itself)."""
    rows = (*DECODE_ROWS, PREFILL_ROWS)
    print(f"{'shape':>8} {'M':>5} | {'bf16 us':>8} {'gemv':>7} | {'awq us':>7} {'TB/s':>5} "
          f"{'x':>5} | {'int8 us':>7} {'+q':>7} {'x':>5} | {'fp8 us':>7} {'+q':>7} {'x':>5} | "
          f"{'TFLOP/s bf16/awq/int8/fp8':>25}")
    for name, (k, n) in SHAPES.items():
        held = {fmt: copies(fmt, k, n) for fmt in FORMATS}
        for m in rows:
            t = {fmt: time_rows(fmt, m, k, n, held[fmt]) for fmt in FORMATS}
            t["gemv"] = time_rows("gemv", m, k, n, held["bf16"]) if m <= 16 else float("nan")
            for fmt in ("int8", "fp8"):
                t[fmt + "+q"] = time_rows(fmt, m, k, n, held[fmt], with_quant=True)
            results.setdefault("linear", {}).setdefault(name, {})[m] = t
            flops = "/".join(f"{tflops(m, k, n, t[f]):.0f}" for f in FORMATS)
            print(f"{name:>8} {m:>5} | {t['bf16']:>8.1f} {t['gemv']:>7.1f} | {t['awq']:>7.1f} "
                  f"{tbs('awq', k, n, t['awq']):>5.2f} {t['bf16'] / t['awq']:>5.2f} | "
                  f"{t['int8']:>7.1f} {t['int8+q']:>7.1f} {t['bf16'] / t['int8+q']:>5.2f} | "
                  f"{t['fp8']:>7.1f} {t['fp8+q']:>7.1f} {t['bf16'] / t['fp8+q']:>5.2f} | "
                  f"{flops:>25}")
        del held


def fused_times(m: int, held: dict, o_held: dict) -> dict[str, float]:
    """The down projection after SiLU-and-mul, and W8A8's o_proj quantizing its own input:
    the op before in its own kernel ("split") or inside the matmul ("fused", at any row count,
    whatever the tables say)."""
    k, n = SHAPES["down"]
    gate_up = torch.randn(m, 2 * k, device=DEVICE, dtype=BF16)
    attn = torch.randn(m, SHAPES["o"][0], device=DEVICE, dtype=BF16)
    awq_cfg = triton_awq.pick_config(m, n, k)
    one_row = MatmulConfig(1, 8, 1024, 1, 4, 1)
    silu_cfg = triton_w8a8.FUSED_CONFIGS.get(("silu", 1, "deep"), one_row) if m == 1 else \
        triton_w8a8.pick_config(m, n, k)
    quant_cfg = triton_w8a8.FUSED_CONFIGS.get(("quant", 1, "narrow"), one_row) if m == 1 else \
        triton_w8a8.pick_config(m, *SHAPES["o"][::-1])

    def bf16_split(w):
        return lambda: triton_gemv.linear(triton_activation.silu_and_mul(gate_up), w)

    def bf16_fused(w):
        return lambda: triton_gemv.silu_mul_linear(gate_up, w)

    def awq_split(w):
        return lambda: triton_awq.awq_linear(triton_activation.silu_and_mul(gate_up), *w, GROUP)

    def awq_fused(w):
        return lambda: triton_awq.launch(gate_up, *w, GROUP, None, awq_cfg, silu_mul=True)

    def silu_split(w):
        return lambda: triton_w8a8.w8a8_linear(
            *triton_quant_act.silu_mul_quant(gate_up, w[0].dtype), *w)

    def silu_fused(w):
        return lambda: triton_w8a8.launch(gate_up, None, *w, None, BF16, silu_cfg, "silu")

    def quant_split(w):
        return lambda: triton_w8a8.w8a8_linear(
            *triton_quant_act.quantize_per_token(attn, w[0].dtype), *w)

    def quant_fused(w):
        return lambda: triton_w8a8.launch(attn, None, *w, None, BF16, quant_cfg, "quant")

    t = {"bf16 silu split": rotate(bf16_split, held["bf16"]),
         "bf16 silu fused": rotate(bf16_fused, held["bf16"]),
         "awq silu split": rotate(awq_split, held["awq"]),
         "awq silu fused": rotate(awq_fused, held["awq"])}
    for fmt in ("int8", "fp8"):
        t[f"{fmt} silu split"] = rotate(silu_split, held[fmt])
        t[f"{fmt} silu fused"] = rotate(silu_fused, held[fmt])
        t[f"{fmt} o quant split"] = rotate(quant_split, o_held[fmt])
        t[f"{fmt} o quant fused"] = rotate(quant_fused, o_held[fmt])
    return t


def bench_fused(results: dict) -> None:
    """Split against fused prologues at decode sizes (us)."""
    held = {fmt: copies(fmt, *SHAPES["down"]) for fmt in FORMATS}
    o_held = {fmt: copies(fmt, *SHAPES["o"]) for fmt in ("int8", "fp8")}
    print()
    for m in (1, 16):
        t = fused_times(m, held, o_held)
        results.setdefault("fused", {})[m] = t
        cases = sorted({label.rsplit(" ", 1)[0] for label in t})
        print(f"M={m:>2}: " + "  ".join(
            f"{case} {t[case + ' split']:.1f}/{t[case + ' fused']:.1f}" for case in cases)
            + "  (split/fused us)")
    del held, o_held


def large_times(m: int, k: int, n: int, weights: dict) -> dict[str, float]:
    awq_w, int8_w, fp8_w = weights["awq"], weights["int8"], weights["fp8"]
    x = torch.randn(m, k, device=DEVICE, dtype=BF16)
    large = triton_awq.CONFIGS.get((LARGE, shape_class(n, k)),
                                   triton_awq._DEFAULT_LARGE)
    xq, xs = quantized_rows(INT8, m, k)
    fq, fs = quantized_rows(FP8, m, k)
    cfg = triton_w8a8.pick_config(m, n, k)

    def scaled_mm(fast: bool) -> Callable:
        return lambda: torch._scaled_mm(fq, fp8_w[0].t(), scale_a=fs[:, None],
                                        scale_b=fp8_w[1][None, :], out_dtype=BF16,
                                        use_fast_accum=fast)

    return {
        "awq fused": time_eager(lambda: triton_awq.launch(x, *awq_w, GROUP, None, large)),
        "awq deq+mm": time_eager(lambda: x @ triton_awq.awq_dequantize(*awq_w, GROUP)),
        "int8 triton": time_eager(lambda: triton_w8a8.launch(xq, xs, *int8_w, None, BF16, cfg)),
        "int8 _int_mm": time_eager(lambda: triton_w8a8.int_mm_linear(xq, xs, *int8_w, None,
                                                                     BF16)),
        "fp8 triton": time_eager(lambda: triton_w8a8.launch(fq, fs, *fp8_w, None, BF16, cfg)),
        "fp8 _scaled_mm": time_eager(scaled_mm(False)),
        "fp8 fast acc": time_eager(scaled_mm(True)),
    }


def bench_large(results: dict) -> None:
    """Large-M choices: W4A16's fused kernel (LARGE config) against dequantize + cuBLAS, and
    W8A8's Triton kernel against cuBLAS (int8: ``int_mm_linear``, ``_int_mm`` then the scale
    epilogue kernel; fp8: ``_scaled_mm`` with row-wise scales, precise and fast accumulation)."""
    print(f"\n{'shape':>8} {'M':>5} | {'awq fused':>9} {'deq+mm':>7} | {'int8 triton':>11} "
          f"{'_int_mm':>8} | {'fp8 triton':>10} {'_scaled_mm':>10} {'fast acc':>8}  (us)")
    for name, (k, n) in SHAPES.items():
        weights = {fmt: make_weight(fmt, k, n) for fmt in ("awq", "int8", "fp8")}
        for m in LARGE_ROWS:
            t = large_times(m, k, n, weights)
            results.setdefault("large", {}).setdefault(name, {})[m] = t
            print(f"{name:>8} {m:>5} | {t['awq fused']:>9.1f} {t['awq deq+mm']:>7.1f} | "
                  f"{t['int8 triton']:>11.1f} {t['int8 _int_mm']:>8.1f} | "
                  f"{t['fp8 triton']:>10.1f} {t['fp8 _scaled_mm']:>10.1f} "
                  f"{t['fp8 fast acc']:>8.1f}")


def bench_lm_head(results: dict) -> dict[int, float]:
    """The bf16 LM head every format keeps, per row count (rotating two copies: 2 GB)."""
    heads = [torch.randn(VOCAB, HIDDEN, device=DEVICE, dtype=BF16) * 0.02 for _ in range(2)]
    out = {}
    for m in (*DECODE_ROWS, PREFILL_ROWS):
        x = torch.randn(m, HIDDEN, device=DEVICE, dtype=BF16)
        if m >= PREFILL_ROWS:  # a prefill step computes logits for its last rows only
            x = x[:1]
        out[m] = rotate(lambda w, x=x: lambda: triton_gemv.linear(x, w), heads, calls=8)
    del heads
    results["lm_head"] = out
    return out


def summary(results: dict, lm_head: dict[int, float]) -> None:
    """Matmul time of one decode step (and one prefill step) per format: 32 layers + LM head."""
    linear = results["linear"]
    print("\n=== per step: 32 layers' matmuls + the bf16 LM head "
          "(W8A8 with the o/down inputs quantized: +q)")
    print(f"{'M':>5} | {'bf16 ms':>8} | {'awq ms':>7} {'x':>5} | {'int8+q ms':>9} {'x':>5} | "
          f"{'fp8+q ms':>8} {'x':>5} | awq weight TB/s (of {COPY_TBS})")
    def step(fmt: str, m: int) -> float:
        layer = sum(linear[name][m][fmt] for name in SHAPES)
        return (LAYERS * layer + lm_head[m]) / 1000

    for m in (*DECODE_ROWS, PREFILL_ROWS):
        bf16, awq = step("bf16", m), step("awq", m)
        int8, fp8 = step("int8+q", m), step("fp8+q", m)
        awq_bytes = LAYERS * sum(weight_bytes("awq", k, n) for k, n in SHAPES.values())
        awq_layers_ms = awq - lm_head[m] / 1000
        print(f"{m:>5} | {bf16:>8.3f} | {awq:>7.3f} {bf16 / awq:>5.2f} | {int8:>9.3f} "
              f"{bf16 / int8:>5.2f} | {fp8:>8.3f} {bf16 / fp8:>5.2f} | "
              f"{awq_bytes / awq_layers_ms / 1e9:.2f}")


# Compiling ahead, in a pool: the tables' calls, and the sweep's (sweep_quant_linear.py).


def table_tasks() -> list[tuple]:
    """``("op", format, with_quant, shape name, rows)``: every call of the tables."""
    return [("op", fmt, quant, name, m)
            for fmt, quant in (("awq", False), ("int8", False), ("int8", True), ("fp8", False),
                               ("fp8", True))
            for name in SHAPES for m in (*DECODE_ROWS, PREFILL_ROWS)]


def _run_once(task: tuple) -> str | None:
    """Run one task's call (compiling its kernels into Triton's on-disk cache)."""
    import sweep_awq_common
    import sweep_awq_gemv
    import sweep_awq_tc
    import sweep_quant_linear

    try:
        if task[0] in ("tc", "tc-old"):
            sweep_awq_tc.run_task(task)
        elif task[0] == "gemv":
            _, config, name, m = task
            k, n = SHAPES[name]
            w = sweep_awq_common.repacked(make_weight("awq", k, n))
            sweep_awq_gemv.gemv_call(config, m, k, w)()
        elif task[0] == "config":
            _, kernel, config, name, m = task
            k, n = SHAPES[name]
            sweep_quant_linear.sweep_call(kernel, config, m, k, n, make_weight(kernel, k, n))()
        else:
            _, fmt, quant, name, m = task
            k, n = SHAPES[name]
            op_call(fmt, m, k, n, make_weight(fmt, k, n), quant)()
        torch.cuda.synchronize()
    except Exception as exc:  # past the shared memory or register limits
        return f"{task[1:]}: {type(exc).__name__}"
    return None


def _specialization(task: tuple) -> tuple:
    """What makes two tasks compile different kernels (Triton specializes M == 1 and the
    blocks' divisibility; the split count is not specialized)."""
    if task[0] == "op":
        return task
    if task[0] == "gemv":
        import sweep_awq_gemv

        return sweep_awq_gemv.specialization(task)
    if task[0] in ("tc", "tc-old"):
        import sweep_awq_tc

        return sweep_awq_tc.specialization(task)
    _, kernel, cfg, name, m = task
    k, n = SHAPES[name]
    block_m = 1 if cfg.block_m == 1 else max(16, cfg.block_m)
    return (kernel, cfg.block_m, cfg.block_n, cfg.block_k, cfg.num_warps, cfg.num_stages,
            m == 1, m % block_m == 0, cfg.split_k > 1, k % cfg.block_k == 0)


def precompile(tasks: list[tuple]) -> None:
    """Fill Triton's on-disk cache from a pool of processes, one task per distinct kernel
    specialization: compiling them one at a time would take minutes of the GPU machine."""
    unique = list({_specialization(t): t for t in tasks}.values())
    start = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(max(1, (os.cpu_count() or 2) - 2)) as pool:
        failed = [f for f in pool.map(_run_once, unique, chunksize=1) if f]
    print(f"compiled {len(unique)} kernel variants in {time.monotonic() - start:.0f} s; "
          f"{len(failed)} failed: {failed}")

def main() -> None:
    import sweep_awq_gemv  # they import this module, so not at the top
    import sweep_awq_tc
    import sweep_quant_linear

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true",
                        help="first time a grid of launch configs per kernel, shape and rows")
    parser.add_argument("--sweep-budget", type=float, default=60.0,
                        help="seconds the sweep's timing may take before it stops")
    parser.add_argument("--gemv-sweep", action="store_true",
                        help="first compare the W4A16 GEMV's configs with the AutoAWQ-layout "
                        "kernel at 1-8 rows (about two minutes), then run the tables")
    parser.add_argument("--gemv-only", action="store_true",
                        help="with --gemv-sweep: stop after the GEMV comparison")
    parser.add_argument("--tc-sweep", action="store_true",
                        help="first compare the W4A16 tensor-core matmul's configs with the "
                        "AutoAWQ-layout kernel at 16-255 rows (about a minute), then run the "
                        "tables")
    parser.add_argument("--tc-only", action="store_true",
                        help="with --tc-sweep: stop after the comparisons it asked for")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 16, 64, 256],
                        help="row counts the sweep times")
    parser.add_argument("--json", help="write every timing to this file")
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"triton {__import__('triton').__version__}")
    results: dict = {"device": torch.cuda.get_device_name()}
    tasks = sweep_quant_linear.sweep_tasks(tuple(args.rows)) if args.sweep else []
    gemv = sweep_awq_gemv.gemv_tasks() if args.gemv_sweep else []
    tc = sweep_awq_tc.tc_tasks() if args.tc_sweep else []
    only = args.gemv_only or args.tc_only
    precompile(tasks + gemv + tc + ([] if only else table_tasks()))
    if gemv:
        sweep_awq_gemv.compare(gemv, results)
    if tc:
        sweep_awq_tc.compare(tc, results)
    if (gemv or tc) and only:
        write_json(args.json, results)
        return
    if args.sweep:
        print("\n=== sweep: the best three (block_m, block_n, block_k, split_k, warps, stages)")
        sweep_quant_linear.sweep(tasks, args.sweep_budget, results)
        sweep_quant_linear.suggest(results)
        print()
    bench_shapes(results)
    bench_fused(results)
    bench_large(results)
    summary(results, bench_lm_head(results))
    write_json(args.json, results)


def write_json(path: str | None, results: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
