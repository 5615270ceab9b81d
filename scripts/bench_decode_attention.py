"""Paged decode attention on a GPU: microseconds per call by batch, context and split count.

For Llama-3-8B's attention (32 query heads, 8 K/V heads, head_dim 128, bf16, 64-token blocks),
times the Triton kernel as a CUDA graph step would run it: the block tables are as wide as a
``--session-len`` session (the graph's static buffer), while sequences hold ``--context``
tokens. Prints the time with the split count the op chooses and with each fixed count, and the
bandwidth of the K/V bytes actually read. ``--quant-policy 8`` or ``4`` times the same calls over
an int8 or int4 cache (codes plus a float32 scale and zero per token and head). Unless
``--no-config-sweep``, each row also times the chosen split count at every launch config, as
``<tokens per tile>n<warps>w<stages>s microseconds``, and over a quantized cache once per way
of reading its codes (a line per ``decode_launch.CODE_VARIANTS`` entry, ``--variants`` picks
them); the defaults live in ``decode_launch.py`` (``_CONFIGS`` and ``_QUANT_CONFIGS``).

    python scripts/bench_decode_attention.py [--batch-size 1 4 16 64 256] [--context 256 640 2048]
        [--quant-policy 0 8 4] [--variants words bytes pairs f16pairs]
"""

from __future__ import annotations

import argparse

import torch
from lmforge.model.config import ModelConfig
from lmforge_torch_triton import kv_cache
from lmforge_torch_triton.ops.decode_launch import CODE_VARIANTS, choose_launch
from lmforge_torch_triton.ops.triton_decode_attention import paged_decode_attention_splitk
from triton.runtime.errors import OutOfResources

HEADS, KV_HEADS, HEAD_DIM, BLOCK = 32, 8, 128, 64
# One layer of Llama-3-8B's attention, for the cache's bytes per token.
MODEL = ModelConfig(architecture="LlamaForCausalLM", num_layers=1, hidden_size=4096,
                    num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                    intermediate_size=14336, vocab_size=128256)
DTYPE = torch.bfloat16
CALLS = 32  # per graph, over as many layers' caches, so nothing stays in L2


def time_us(fn, replays: int = 5) -> float:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn(0)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(CALLS):
            fn(i)
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (replays * CALLS)


def make_cache(blocks: int, policy: int, device: torch.device) -> dict:
    """One layer's K/V pool as the attention op takes it: the caches and, quantized, the codes
    of random values with their scales and zeros."""
    shape = (blocks, BLOCK, KV_HEADS, HEAD_DIM)
    k, v = (torch.randn(shape, device=device, dtype=DTYPE) for _ in range(2))
    if not policy:
        return dict(k_cache=k, v_cache=v)
    (k, k_sz), (v, v_sz) = (kv_cache.quantize(t, policy) for t in (k, v))
    return dict(k_cache=k, v_cache=v, k_scales_zeros=k_sz, v_scales_zeros=v_sz,
                quant_policy=policy)


def bench_case(batch: int, context: int, width: int, splits: list[int], policy: int,
               sweep_configs: bool = True, variants: tuple[str, ...] = CODE_VARIANTS,
               max_registers: int | None = None) -> str:
    """One table row: the chosen split count's time and bandwidth, then each fixed count's;
    with ``sweep_configs``, a line of launch configs per code variant."""
    device = torch.device("cuda")
    per_seq = -(-context // BLOCK)
    blocks = batch * per_seq
    per_token = kv_cache.bytes_per_token(MODEL, DTYPE, policy) // MODEL.num_layers
    kv_bytes = batch * context * per_token
    copies = max(2, min(CALLS, -(-(256 << 20) // kv_bytes)))  # enough that L2 never holds it
    caches = [make_cache(blocks, policy, device) for _ in range(copies)]
    tables = torch.zeros(batch, width, dtype=torch.int32, device=device)
    tables[:, :per_seq] = torch.randperm(blocks, device=device).view(batch, per_seq)
    lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    q = torch.randn(batch, HEADS, HEAD_DIM, device=device, dtype=DTYPE)

    def run(num_splits, warps=None, stages=None, block_n=None, variant=None):
        def call(i):
            cache = dict(caches[i % copies])
            k, v = cache.pop("k_cache"), cache.pop("v_cache")
            return paged_decode_attention_splitk(q, k, v, tables, lens, HEAD_DIM**-0.5, None,
                                                 num_splits, warps, stages, block_n=block_n,
                                                 variant=variant, max_registers=max_registers,
                                                 **cache)
        return call

    chosen, _ = choose_launch(batch, KV_HEADS, width * BLOCK, device, policy)
    us = time_us(run(chosen))
    cells = " ".join(f"{time_us(run(n)):7.1f}" for n in splits)
    row = (f"{batch:5d} {context:7d} {us:6.1f} ({chosen:2d}, {kv_bytes / us / 1e6:4.1f} TB/s) "
           f"{cells}")
    # The launch config of the chosen split count: tokens per tile x warps x pipeline stages.
    if not sweep_configs:
        return row
    for name in variants if policy else CODE_VARIANTS[:1]:
        configs = []
        for block_n in (64, 128):
            for warps, stages in ((4, 1), (4, 2), (4, 3), (4, 4), (8, 2), (8, 3), (2, 1), (2, 2),
                                  (2, 3)):
                launch = run(chosen, warps, stages, block_n, CODE_VARIANTS.index(name))
                try:
                    cell = f"{time_us(launch):.1f}"
                except OutOfResources:  # tiles too large for the SM's shared memory
                    cell = "n/a"
                except Exception as error:  # a config that does not compile: say so, go on
                    cell = f"failed ({type(error).__name__})"
                configs.append(f"{block_n}n{warps}w{stages}s {cell}")
        label = f"{name} configs" if policy else "configs"
        row += f"\n      {label}: " + ", ".join(configs)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--context", type=int, nargs="+", default=[256, 640, 2048])
    parser.add_argument("--session-len", type=int, default=8192)
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2, 4, 8, 16, 33, 64])
    parser.add_argument("--quant-policy", type=int, nargs="+", default=[0], choices=(0, 4, 8))
    parser.add_argument("--no-config-sweep", action="store_true",
                        help="skip timing each warps x stages launch config")
    parser.add_argument("--variants", nargs="+", choices=CODE_VARIANTS, default=CODE_VARIANTS,
                        help="ways of reading a quantized cache's codes to sweep")
    parser.add_argument("--max-registers", type=int, default=None,
                        help="cap the kernel's registers per thread (spills for occupancy)")
    args = parser.parse_args()
    width = args.session_len // BLOCK
    for policy in args.quant_policy:
        print(f"quant_policy {policy}")
        print(f"{'batch':>5} {'context':>7} {'chosen (splits, K/V read)':>26} "
              + " ".join(f"{n:>7}" for n in args.splits))
        for batch in args.batch_size:
            for context in args.context:
                print(bench_case(batch, context, width, args.splits, policy,
                                 not args.no_config_sweep, tuple(args.variants),
                                 args.max_registers), flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
