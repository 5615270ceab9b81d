"""Paged prefill attention on a GPU: microseconds per layer by prompt, cached prefix and cache
quant policy, with a step's own tokens read back from the cache or from their unquantized K/V.

For Llama-3-8B's attention (32 query heads, 8 K/V heads, head_dim 128, bf16, 64-token blocks),
times the Triton kernel over as many layers' caches as keep L2 cold (``bench_decode_attention``'s
CUDA-graph timing), for ``--batch`` sequences of ``--prompt`` new tokens after ``--prefix``
cached ones. Column ``cache`` reads every key and value from the paged cache; ``extend`` passes
the step's own K/V (``k_new``, ``v_new``), as the engine does, so only the prefix comes from the
cache. ``x32`` is the sum over Llama-3-8B's 32 layers, what ``profile_decode.py`` reports for
``_prefill_kernel``.

    python scripts/bench_prefill_attention.py [--prompt 256 300 1000] [--prefix 0 256 2048]
        [--batch 1] [--quant-policy 0 8 4]
"""

from __future__ import annotations

import argparse

import torch
from bench_decode_attention import BLOCK, DTYPE, HEAD_DIM, HEADS, KV_HEADS, make_cache, time_us
from lmforge_torch_triton.ops.triton_prefill_attention import paged_prefill_attention

COPIES = 8  # caches cycled through by the timed calls


def bench_case(batch: int, prompt: int, prefix: int, policy: int) -> str:
    """One table row: both paths' microseconds per layer and their sum over 32 layers."""
    device = torch.device("cuda")
    context = prefix + prompt
    per_seq = -(-context // BLOCK)
    blocks = batch * per_seq
    caches = [make_cache(blocks, policy, device) for _ in range(COPIES)]
    tables = torch.randperm(blocks, device=device, dtype=torch.int32).view(batch, per_seq)
    kv_lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    cu_q_lens = torch.arange(batch + 1, dtype=torch.int32, device=device) * prompt
    q = torch.randn(batch * prompt, HEADS, HEAD_DIM, device=device, dtype=DTYPE)
    k_new, v_new = (torch.randn(batch * prompt, KV_HEADS, HEAD_DIM, device=device, dtype=DTYPE)
                    for _ in range(2))
    out = torch.empty_like(q)

    def run(fresh: bool):
        extra = dict(k_new=k_new, v_new=v_new) if fresh else {}

        def call(i):
            cache = dict(caches[i % COPIES])
            k, v = cache.pop("k_cache"), cache.pop("v_cache")
            paged_prefill_attention(q, k, v, tables, cu_q_lens, kv_lens, HEAD_DIM**-0.5,
                                    max_q_len=prompt, out=out, **cache, **extra)
        return call

    cells = []
    for fresh in (False, True):
        us = time_us(run(fresh))
        cells.append(f"{us:8.1f} {us * 32 / 1e3:7.3f}")
    return f"{batch:5d} {prompt:6d} {prefix:6d} " + "   ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--prompt", type=int, nargs="+", default=[256, 300, 1000])
    parser.add_argument("--prefix", type=int, nargs="+", default=[0, 256, 2048])
    parser.add_argument("--quant-policy", type=int, nargs="+", default=[0, 8, 4],
                        choices=(0, 4, 8))
    args = parser.parse_args()
    for policy in args.quant_policy:
        print(f"quant_policy {policy}")
        print(f"{'batch':>5} {'prompt':>6} {'prefix':>6} {'cache us':>8} {'x32 ms':>7}   "
              f"{'extend us':>8} {'x32 ms':>7}")
        for batch in args.batch:
            for prompt in args.prompt:
                for prefix in args.prefix:
                    print(bench_case(batch, prompt, prefix, policy), flush=True)
                    torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
