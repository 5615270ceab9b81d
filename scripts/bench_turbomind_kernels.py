"""The turbomind engine's decode kernels on a GPU, timed as a CUDA graph runs them, at
Llama-3-8B's shapes (bf16): paged decode attention (32 query heads over 8 K/V heads of 128,
64-token blocks) by batch, context and split count, with the bandwidth of the K/V bytes read;
and the GEMV at 1 to 4 rows against cuBLAS, with the bandwidth of the weight bytes read.

    python scripts/bench_turbomind_kernels.py [--batch-size 1 16 64 256] [--context 256 2048]

The decode attention timed is the tensor-core kernel; ``LMFORGE_TURBOMIND_DECODE=simt`` times
the CUDA-core one it replaced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode_attention import BLOCK, DTYPE, HEAD_DIM, HEADS, KV_HEADS, time_us  # noqa: E402
from lmforge_turbomind_cuda import ops  # noqa: E402
from lmforge_turbomind_cuda.steps import decode_splits  # noqa: E402

LINEARS = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096),
           "down": (4096, 14336), "lm_head": (128256, 4096)}


def attention_row(batch: int, context: int, splits: list[int], num_sms: int) -> str:
    device = torch.device("cuda")
    per_seq = -(-context // BLOCK)
    blocks = batch * per_seq
    kv_bytes = 2 * batch * context * KV_HEADS * HEAD_DIM * DTYPE.itemsize
    copies = max(2, min(32, -(-(256 << 20) // kv_bytes)))  # enough that L2 never holds it
    caches = [tuple(torch.randn(blocks, BLOCK, KV_HEADS, HEAD_DIM, device=device, dtype=DTYPE)
                    for _ in range(2)) for _ in range(copies)]
    tables = torch.randperm(blocks, device=device, dtype=torch.int32).view(batch, per_seq)
    lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    q = torch.randn(batch, HEADS, HEAD_DIM, device=device, dtype=DTYPE)

    def run(num_splits):
        def call(i):
            k, v = caches[i % copies]
            return ops.decode_attention(q, k, v, tables, lens, HEAD_DIM**-0.5, 0, num_splits)
        return call

    chosen = decode_splits(batch, KV_HEADS, num_sms)
    us = time_us(run(chosen))
    cells = " ".join(f"{time_us(run(n)):7.1f}" for n in splits)
    return (f"{batch:5d} {context:7d} {us:6.1f} ({chosen:2d}, {kv_bytes / us / 1e6:4.1f} TB/s) "
            f"{cells}")


def gemv_rows(rows: list[int]) -> None:
    device = torch.device("cuda")
    print(f"\n{'linear':>8} {'rows':>4} {'GEMV us':>8} {'TB/s':>5} {'cuBLAS us':>9} {'TB/s':>5}")
    for name, (n, k) in LINEARS.items():
        weights = [torch.randn(n, k, device=device, dtype=DTYPE) * k**-0.5 for _ in range(2)]
        workspace = torch.empty(32 << 20, dtype=torch.uint8, device=device)
        size = n * k * DTYPE.itemsize
        for m in rows:
            x = torch.randn(m, k, device=device, dtype=DTYPE)
            gemv = time_us(lambda i, x=x, w=weights, ws=workspace: ops.linear(x, w[i % 2], 1, ws))
            cublas = time_us(lambda i, x=x, w=weights: F.linear(x, w[i % 2]))
            print(f"{name:>8} {m:4d} {gemv:8.1f} {size / gemv / 1e6:5.2f} {cublas:9.1f} "
                  f"{size / cublas / 1e6:5.2f}", flush=True)
        weights.clear()
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--context", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    num_sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(f"decode attention on {torch.cuda.get_device_name()}")
    print(f"{'batch':>5} {'context':>7} {'chosen (splits, K/V read)':>26} "
          + " ".join(f"{n:>7}" for n in args.splits))
    for batch in args.batch_size:
        for context in args.context:
            print(attention_row(batch, context, args.splits, num_sms), flush=True)
            torch.cuda.empty_cache()
    gemv_rows(args.rows)


if __name__ == "__main__":
    main()
