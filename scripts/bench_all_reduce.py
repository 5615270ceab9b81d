"""All-reduce on one host's GPUs: NCCL against the peer-memory paths, eager and in a CUDA graph.

    python scripts/bench_all_reduce.py [--world 2] [--dtype bfloat16] [--json out.json]

For each size from 8 KB (one token's hidden state in bf16) to 8 MB, every path is checked
against the exact sum, then timed: eager (back-to-back calls, launch overhead included) and as
graph replays of a chain of all-reduces (what a captured decode step runs). Prints a table in
microseconds per all-reduce, the largest sizes at which each peer-memory path beats NCCL in a
graph (what ``parallel/symm_mem.py``'s ``PATHS`` should say), and what the engine's per-step
command to the workers costs over its gloo channel. Keep ``NCCL_NVLS_ENABLE=0`` and
``TORCH_SYMM_MEM_DISABLE_MULTICAST=1`` where NVLink multicast must stay off: nothing here uses it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SIZES = [8 << 10, 16 << 10, 32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20,
         2 << 20, 4 << 20, 8 << 20]
PATHS = ("nccl", "one-shot", "two-shot")
CHAIN = 32  # all-reduces per captured graph
EAGER_ITERS, GRAPH_REPLAYS, WARMUP = 200, 50, 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _size_label(nbytes: int) -> str:
    return f"{nbytes >> 20} MB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KB"


def _ops(fast):
    def nccl(x):
        dist.all_reduce(x)
        return x

    ops = {"nccl": nccl}
    if fast is not None:
        ops["one-shot"] = fast.one_shot
        ops["two-shot"] = fast.two_shot
    return ops


def _check(op, n: int, dtype, device, rank: int, world: int) -> None:
    x = torch.full((n,), float(rank + 1), dtype=dtype, device=device)
    x[::7] = -1.0 - rank  # not the same value everywhere
    got = op(x.clone())
    want = torch.full((n,), world * (world + 1) / 2, dtype=torch.float32, device=device)
    want[::7] = -world - world * (world - 1) / 2
    torch.testing.assert_close(got.float(), want)


def _time_eager(op, x, barrier) -> float:
    for _ in range(WARMUP):
        op(x)
    barrier()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(EAGER_ITERS):
        op(x)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / EAGER_ITERS * 1e6


def _time_graph(op, x, barrier) -> float:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            op(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        y = x
        for _ in range(CHAIN):
            y = op(y) * 0.5  # keep values bounded; the multiply is timed alone below
    scale = torch.cuda.CUDAGraph()
    with torch.cuda.graph(scale, capture_error_mode="thread_local"):
        z = x
        for _ in range(CHAIN):
            z = z * 0.5
    timings = []
    for g in (graph, scale):
        for _ in range(3):
            g.replay()
        barrier()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(GRAPH_REPLAYS):
            g.replay()
        torch.cuda.synchronize()
        timings.append((time.perf_counter() - start) / (GRAPH_REPLAYS * CHAIN) * 1e6)
    return timings[0] - timings[1]


def _control_cost(control, rank: int, device) -> dict:
    """Microseconds from the moment rank 0 sends a step's command until every rank holds the
    decoded batch (the slowest rank's time; all start together after a barrier)."""
    from lmforge.engine.batch import ForwardBatch
    from lmforge_torch_triton.parallel.messages import STEP, Channel, decode_step, encode_step

    channel = Channel(control, dist.group.WORLD, device)
    result = {}
    for batch_size, blocks in ((1, 10), (64, 10), (256, 32)):
        batch = ForwardBatch(input_ids=list(range(batch_size)), q_lens=[1] * batch_size,
                             kv_lens=[blocks * 64 - 1] * batch_size,
                             block_tables=[list(range(blocks))] * batch_size,
                             need_logits=[True] * batch_size, block_size=64)
        times = []
        for i in range(200):
            dist.barrier(group=control)
            start = time.perf_counter()
            if rank == 0:
                channel.send(STEP, encode_step(batch))
            else:
                decode_step(channel.receive().args)
            if i >= 20:
                times.append(time.perf_counter() - start)
        mean = torch.tensor([sum(times) / len(times) * 1e6], dtype=torch.float64)
        dist.all_reduce(mean, op=dist.ReduceOp.MAX, group=control)
        result[f"decode batch {batch_size}"] = mean.item()
    return result


def _worker(rank: int, world: int, port: int, dtype_name: str, out: str | None) -> None:
    from lmforge_torch_triton.parallel.symm_mem import SymmetricMemoryAllReduce

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=device,
                            timeout=datetime.timedelta(minutes=5))
    control = dist.new_group(backend="gloo")
    dtype = getattr(torch, dtype_name)
    try:
        fast = SymmetricMemoryAllReduce(dist.group.WORLD, device, dtype)
        fast_error = ""
    except Exception as exc:  # reported in the table: NCCL alone is measured
        fast, fast_error = None, f"{type(exc).__name__}: {exc}"

    def barrier():
        dist.barrier(group=control)

    rows = []
    for nbytes in SIZES:
        n = nbytes // dtype.itemsize
        row = {"bytes": nbytes}
        for name, op in _ops(fast).items():
            if name != "nccl" and nbytes > fast.max_bytes:
                continue
            _check(op, n, dtype, device, rank, world)
            x = torch.randn(n, dtype=dtype, device=device)
            row[f"{name}_eager_us"] = _time_eager(op, x, barrier)
            row[f"{name}_graph_us"] = _time_graph(op, x, barrier)
        rows.append(row)
    control_us = _control_cost(control, rank, device)
    if rank == 0:
        report = {"device": torch.cuda.get_device_name(device), "world": world,
                  "dtype": dtype_name, "torch": torch.__version__, "rows": rows,
                  "peer_memory_error": fast_error, "control_us": control_us}
        _print(report)
        if out:
            with open(out, "w") as f:
                json.dump(report, f, indent=2)
    dist.destroy_process_group()


def _print(report: dict) -> None:
    print(f"\nall-reduce, {report['dtype']}, {report['world']} ranks on {report['device']} "
          f"(torch {report['torch']}), microseconds per all-reduce")
    if report["peer_memory_error"]:
        print(f"peer-memory paths unavailable: {report['peer_memory_error']}")
    header = ["size"] + [f"{p} {mode}" for p in PATHS for mode in ("eager", "graph")]
    print("  ".join(f"{h:>15}" for h in header))
    for row in report["rows"]:
        cells = [_size_label(row["bytes"])]
        for p in PATHS:
            for mode in ("eager", "graph"):
                value = row.get(f"{p}_{mode}_us")
                cells.append("-" if value is None else f"{value:.1f}")
        print("  ".join(f"{c:>15}" for c in cells))
    for path in ("one-shot", "two-shot"):
        faster = [r["bytes"] for r in report["rows"]
                  if r.get(f"{path}_graph_us", float("inf")) < r["nccl_graph_us"]]
        largest = _size_label(max(faster)) if faster else "none"
        print(f"{path} beats NCCL in a graph up to: {largest}")
    print("a step's command over the gloo channel, rank 0's send to every rank's decoded batch: "
          + ", ".join(f"{k} {v:.0f} us" for k, v in report["control_us"].items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=int, default=torch.cuda.device_count())
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--json", default=None, help="write the measurements here")
    args = parser.parse_args()
    if args.world < 2 or args.world > torch.cuda.device_count():
        raise SystemExit(f"--world must be 2 to {torch.cuda.device_count()} (the visible GPUs).")
    mp.spawn(_worker, args=(args.world, _free_port(), args.dtype, args.json),
             nprocs=args.world)


if __name__ == "__main__":
    main()
