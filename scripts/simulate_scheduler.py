"""What a K/V pool of a given size buys a throughput workload, as the scheduler sees it.

Drives the engine's own :class:`~lmforge.engine.scheduler.Scheduler` over the W2 workload
(ShareGPT requests, all queued at once, each generating its dataset output length, as
``lmforge bench throughput`` runs them) with no model: every scheduled step completes at once
and each sequence whose prompt is done gets one token. No tensor is made, so a pool of any size
runs in seconds on a CPU, and the figures are the engine's: the scheduling code is the same.

  python scripts/simulate_scheduler.py --kv-tokens 64000 120000 227000 --max-batch-size 512 \\
      [--num-prompts 1000] [--block-size 64] [--max-prefill-token-num 8192] [--prefill-interval 16]

Prints, per pool: engine steps (and how many run prefill tokens), preemptions, prefill tokens
computed again after a preemption, mean rows per pure-decode step, and how many steps have
each range of rows. A pool in tokens per quant_policy follows from the bytes per token and
K/V head: ``2 * head_dim`` (bf16), ``head_dim + 8`` (int8), ``head_dim / 2 + 8`` (int4).
"""

from __future__ import annotations

import argparse
import collections

from lmforge.bench.workload import sharegpt_requests
from lmforge.engine.scheduler import Scheduler, SchedulerConfig
from lmforge.engine.sequence import Sequence, SequenceStatus

#: Rows-per-step ranges of the histogram: (name, smallest).
ROW_BUCKETS = (("1-63", 1), ("64-127", 64), ("128-255", 128), ("256-383", 256), ("384+", 384))


def simulate(
    kv_tokens: int,
    max_batch_size: int,
    num_prompts: int,
    block_size: int = 64,
    max_step_tokens: int = 8192,
    prefill_interval: int = 16,
    seed: int = 0,
) -> dict:
    """Run the workload through a scheduler with a pool of ``kv_tokens``; its counts."""
    requests = sharegpt_requests(num_prompts, seed)
    scheduler = Scheduler(
        SchedulerConfig(
            max_batch_size=max_batch_size,
            max_step_tokens=max_step_tokens,
            block_size=block_size,
            num_blocks=kv_tokens // block_size,
            prefill_interval=prefill_interval,
        )
    )
    output_len = {}
    for r in requests:
        # As the bench runs by default: no prefix caching.
        seq = Sequence(list(r.prompt_ids), allow_prefix_match=False)
        output_len[seq.seq_id] = r.output_len
        scheduler.add(seq)
    steps = mixed = decode_steps = decode_rows = computed = 0
    rows = collections.Counter()
    while scheduler.has_work:
        out = scheduler.schedule()
        scheduler.update(out)
        steps += 1
        computed += out.num_tokens
        if out.seqs:
            rows[[name for name, low in ROW_BUCKETS if len(out.seqs) >= low][-1]] += 1
        if any(n > 1 for n in out.num_new_tokens):
            mixed += 1
        else:
            decode_steps += 1
            decode_rows += len(out.seqs)
        for seq in out.seqs:
            if seq.status is SequenceStatus.RUNNING and seq.num_computed == seq.num_tokens:
                seq.append_token(0)
                if len(seq.output_ids) >= output_len[seq.seq_id]:
                    scheduler.finish(seq, "length")
    # Every token is computed once, bar the last output token of each request (never fed back).
    once = sum(len(r.prompt_ids) + r.output_len - 1 for r in requests)
    return dict(
        kv_tokens=kv_tokens,
        steps=steps,
        mixed_steps=mixed,
        preemptions=scheduler.num_preemptions,
        recomputed_tokens=computed - once,
        rows_per_decode_step=decode_rows / max(decode_steps, 1),
        rows={name: rows[name] for name, _ in ROW_BUCKETS},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kv-tokens", type=int, nargs="+", required=True)
    parser.add_argument("--max-batch-size", type=int, default=256)
    parser.add_argument("--num-prompts", type=int, default=1000)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--max-prefill-token-num", type=int, default=8192)
    parser.add_argument("--prefill-interval", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        "  pool | steps (mixed) | preempt | recomputed | rows/decode | steps by rows "
        + " ".join(name for name, _ in ROW_BUCKETS)
    )
    for tokens in args.kv_tokens:
        r = simulate(
            tokens,
            args.max_batch_size,
            args.num_prompts,
            args.block_size,
            args.max_prefill_token_num,
            args.prefill_interval,
            args.seed,
        )
        print(
            f"{tokens:>6} | {r['steps']:>5} ({r['mixed_steps']:>4}) | {r['preemptions']:>7} | "
            f"{r['recomputed_tokens']:>10} | {r['rows_per_decode_step']:>11.0f} | "
            + " ".join(f"{n:>5}" for n in r["rows"].values())
        )


if __name__ == "__main__":
    main()
