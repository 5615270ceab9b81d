"""What the two W4A16 launch-table sweeps (``sweep_awq_gemv.py``, ``sweep_awq_tc.py``) share:
timing the AutoAWQ-layout kernel (``old``), bf16 and every candidate config of the new kernel
per shape and row count, and the table entries where the new kernel wins over a shape class."""

from __future__ import annotations

from collections.abc import Callable

import bench_quant_linear as bench
from bench_gemv import rotate
from lmforge_torch_triton.ops import triton_awq, triton_awq_gemv
from lmforge_torch_triton.ops.triton_quant_common import shape_class


def repacked(w: tuple) -> tuple:
    """An AutoAWQ weight tuple ``(qweight, qzeros, scales)`` with the K-major repack instead."""
    return triton_awq_gemv.repack(w[0], bench.GROUP), w[1], w[2]


def old_call(m: int, k: int, w: tuple):
    """The AutoAWQ-layout kernel at its launch table's config (whatever the new tables say)."""
    x = bench.torch.randn(m, k, device=bench.DEVICE, dtype=bench.BF16)
    return lambda: triton_awq.awq_linear(x, *w, bench.GROUP)


def shape_class_of(name: str) -> str:
    k, n = bench.SHAPES[name]
    return shape_class(n, k)


def narrowest_n(name: str) -> int:
    """The fewest output columns among the shapes of ``name``'s class: the split counts the
    sweeps try are those of the class's narrowest shape, so every shape of a class (one launch
    table key) is timed at the same configs."""
    return min(bench.SHAPES[other][1] for other in bench.SHAPES
               if shape_class_of(other) == shape_class_of(name))


def compare(section: str, title: str, rows: tuple[int, ...], configs_by_case: dict,
            new_call: Callable, bf16_op: str, results: dict) -> None:
    """Time old, bf16 and each config of ``configs_by_case[(shape, rows)]`` (``new_call(config,
    m, k, repacked weight)`` gives the call) per shape and row count into
    ``results[section]``; print the best three new configs of each."""
    print(f"\n=== {title}, TB/s of 4-bit weights of {bench.COPY_TBS}")
    out = results.setdefault(section, {})
    for name in bench.SHAPES:
        k, n = bench.SHAPES[name]
        held = bench.copies("awq", k, n)
        dense = bench.copies("bf16", k, n)
        packed = [repacked(w) for w in held]
        for m in rows:
            timed = []
            for cfg in configs_by_case.get((name, m), []):
                def make(w, cfg=cfg, m=m, k=k):
                    return new_call(cfg, m, k, w)

                try:
                    timed.append((rotate(make, packed), tuple(cfg.__dict__.values())))
                except Exception as exc:  # past the register or shared memory limits
                    print(f"  skip {cfg}: {type(exc).__name__}")
            t = {"old": rotate(lambda w, m=m, k=k: old_call(m, k, w), held),
                 "bf16": rotate(lambda w, m=m, k=k, n=n: bench.op_call(bf16_op, m, k, n, w),
                                dense),
                 "new": sorted(timed)}
            out[f"{name} M={m}"] = t
            best = "  ".join(f"{us:.1f} us {bench.tbs('awq', k, n, us):.2f} TB/s {cfg}"
                             for us, cfg in t["new"][:3])
            print(f"{name:>8} M={m}: old {t['old']:.1f} us "
                  f"{bench.tbs('awq', k, n, t['old']):.2f} TB/s | bf16 {t['bf16']:.1f} us | "
                  f"new {best}")
        del held, dense, packed


def best_entries(section: dict, bucket: Callable[[int], int]) -> list[tuple]:
    """Per (row bucket, shape class): ``(key, config tuple, new us, old us)`` for the config
    with the least time summed over the class's shapes (every shape timed), and the old
    kernel's sum."""
    sums: dict[tuple[int, str], dict[tuple, dict[str, float]]] = {}
    old: dict[tuple[int, str], float] = {}
    for case, t in section.items():
        name, rows = case.split()
        key = (bucket(int(rows[2:])), shape_class_of(name))
        old[key] = old.get(key, 0.0) + t["old"]
        for us, cfg in t["new"]:
            sums.setdefault(key, {}).setdefault(tuple(cfg), {})[name] = us
    entries = []
    for key, by_cfg in sorted(sums.items()):
        names = {name for times in by_cfg.values() for name in times}
        complete = {cfg: sum(t.values()) for cfg, t in by_cfg.items() if set(t) == names}
        if complete:
            cfg, new = min(complete.items(), key=lambda item: item[1])
            entries.append((key, cfg, new, old[key]))
    return entries


def suggest(section: dict, bucket: Callable[[int], int], table: str, config_name: str,
            fields: str) -> None:
    """Print :func:`best_entries` as ``CONFIGS`` lines, marking where the old kernel wins."""
    print(f"\n=== {table} entries ({fields}); old/new summed over the class's shapes")
    for key, cfg, new, old in best_entries(section, bucket):
        verdict = "new wins" if new < old else "old wins: no entry"
        print(f"{key}: {config_name}{cfg},  # old {old:.1f} us, new {new:.1f} us: {verdict}")
