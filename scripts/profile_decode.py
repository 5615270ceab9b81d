"""Where a decode step's time goes: the kernels of one CUDA-graph replay, and the engine's steps.

    python scripts/profile_decode.py MODEL_DIR [--batch-size 1 64 256] [--context 256]
        [--backend pytorch|turbomind] [--quant-policy 0|8|4] [--prefill 64 300 1000]
        [--mixed TOKENS] [--prefix TOKENS] [--host]

Builds the engine's runner (``--backend``, default ``pytorch``) on ``MODEL_DIR`` (a config.json
is enough: random bf16 weights), fills every row of the batch with a ``--context``-token sequence, times the replay
with CUDA events, then lists its kernels (torch.profiler) by total time. The gap between the
replay's time and the sum of its kernels is what the launches between kernels cost.
``--prefill`` profiles one prompt of each length the same way (an eager step), and ``--mixed``
puts a prompt beside each batch's decodes (the eager mixed step of a busy server); "synced
alone" is one step's wall time with the host waiting for it, so far above the kernels' sum it
means the host's launches set the pace. ``--prefix`` puts those prompts after that many
cached tokens (a prefix-cache hit or earlier chunks, read from the cache as it stands), where a
prompt without one attends only to its own K/V. With
``--engine``, it then runs each batch size through ``pipeline()`` (128 → 128 tokens) and reports
the wall time of its decode and prefill steps: a decode step much longer than its replay means
the host, not the device, sets the pace. Needs a GPU.
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
from lmforge import registry
from lmforge.engine.batch import ForwardBatch
from lmforge.model.linear import LinearWeight
from lmforge.model.loader import load_model_info


def decode_batch(size: int, context: int, block_size: int, prompt: int = 0,
                 prefix: int = 0) -> ForwardBatch:
    """``size`` decodes at ``context`` tokens, and a ``prompt``-token prefill after them, whose
    first ``prefix`` positions are already cached."""
    per_seq = -(-context // block_size)
    tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(size)]
    q_lens, kv_lens = [1] * size, [context] * size
    if prompt:
        first = size * per_seq
        tables.append(list(range(first, first - (-(prefix + prompt) // block_size))))
        q_lens.append(prompt)
        kv_lens.append(prefix + prompt)
    return ForwardBatch(
        input_ids=[1000 + i for i in range(sum(q_lens))],
        q_lens=q_lens,
        kv_lens=kv_lens,
        block_tables=tables,
        need_logits=[True] * len(q_lens),
        block_size=block_size,
    )


def streamed_weight_bytes(runner) -> int:
    """Bytes a decode step of one token reads: every layer (of a mixture of experts, the router
    and top-k of the experts), the final norm and the LM head (the embedding table is only
    indexed). The pytorch engine keeps its layers as dataclasses of tensors and linear weights
    of some kind, turbomind as dicts of tensors."""
    weights = runner.model.weights if hasattr(runner, "model") else runner.weights
    norm = weights.top["norm"] if isinstance(weights.layers[0], dict) else weights.norm
    total = 0
    for layer in [{"norm": norm, "lm_head": weights.lm_head}, *weights.layers]:
        parts = layer.values() if isinstance(layer, dict) else vars(layer).values()
        for part in parts:
            total += _part_bytes(part)
    return total


def _part_bytes(part) -> int:
    if isinstance(part, LinearWeight):
        return part.nbytes
    if isinstance(part, torch.Tensor):
        return part.numel() * part.element_size()
    if isinstance(part, dict):  # a model plugin's own tensors
        return sum(_part_bytes(p) for p in part.values())
    if part is not None and hasattr(part, "top_k"):  # experts: only the chosen ones are read
        experts = part.gate_up.numel() * part.gate_up.element_size() + \
            part.down.numel() * part.down.element_size()
        return part.router.nbytes + experts * part.top_k // part.gate_up.shape[0]
    return 0


def engine_config(backend: str, **values):
    return registry.load_object(registry.get_engine(backend).config_class)(**values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--engine", action="store_true", help="also time the engine's steps")
    parser.add_argument("--backend", default="pytorch", help="the engine to profile")
    parser.add_argument("--quant-policy", type=int, default=0, help="K/V cache: 0, 8 or 4")
    parser.add_argument("--prefill", type=int, nargs="*", default=[], metavar="TOKENS",
                        help="also profile one prompt of each length (eager steps)")
    parser.add_argument("--mixed", type=int, default=0, metavar="TOKENS",
                        help="add a prompt of this many tokens beside each batch's decodes")
    parser.add_argument("--prefix", type=int, default=0, metavar="TOKENS",
                        help="cached tokens before each prompt of --prefill and --mixed")
    parser.add_argument("--host", action="store_true",
                        help="list where the host's time goes while it queues each step")
    args = parser.parse_args()
    block_size = 64
    max_bs = max(args.batch_size)
    cfg = engine_config(args.backend, dtype="bfloat16", load_format="dummy",
                        max_batch_size=max_bs, session_len=4096, quant_policy=args.quant_policy)
    info = load_model_info(args.model, load_format="dummy", session_len=4096, dtype="bfloat16")
    runner = registry.load_object(registry.get_engine(args.backend).runner)(info, cfg)
    longest = max([args.context, args.prefix + max([args.mixed, *args.prefill])])
    blocks = (max_bs + 1) * -(-longest // block_size) + 8
    runner.allocate_cache(blocks, block_size)
    weight_bytes = streamed_weight_bytes(runner)
    print(f"weights read per step {weight_bytes / 1e9:.2f} GB ({runner.dtype}), "
          f"K/V quant_policy {args.quant_policy}")
    after = f" after {args.prefix} cached" if args.prefix else ""
    steps = [(f"batch {size}, context {args.context}"
              + (f", beside a {args.mixed}-token prompt{after}" if args.mixed else ""),
              decode_batch(size, args.context, block_size, args.mixed, args.prefix))
             for size in args.batch_size]
    steps += [(f"one {n}-token prompt{after}", decode_batch(0, 0, block_size, n, args.prefix))
              for n in args.prefill]
    for title, batch in steps:
        wall = []
        for _ in range(3):
            runner.execute(batch)
        torch.cuda.synchronize()
        for _ in range(5):  # host-synced: what one step costs when nothing is queued behind it
            began = time.perf_counter()
            runner.execute(batch)
            torch.cuda.synchronize()
            wall.append((time.perf_counter() - began) * 1e3)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        iters = 50
        start.record()
        for _ in range(iters):
            runner.execute(batch)
        end.record()
        torch.cuda.synchronize()
        step_ms = start.elapsed_time(end) / iters
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                runner.execute(batch)
            torch.cuda.synchronize()
        totals: dict[str, float] = collections.defaultdict(float)
        counts: dict[str, int] = collections.defaultdict(int)
        for event in prof.events():
            if event.device_type == torch.autograd.DeviceType.CUDA:
                totals[event.name] += event.device_time_total / 5
                counts[event.name] += 1
        kernel_ms = sum(totals.values()) / 1e3
        print(f"\n{title}: step {step_ms:.3f} ms, synced alone {min(wall):.3f} ms "
              f"(kernels {kernel_ms:.3f} ms, {sum(counts.values()) // 5} launches; "
              f"weights at 4.26 TB/s: {weight_bytes / 4.26e12 * 1e3:.3f} ms)")
        for name, us in sorted(totals.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {us / 1e3:8.3f} ms  {counts[name] // 5:4d}x  {name[:110]}")
        if args.host:
            host_profile(runner, batch, args.top)
    runner.close()
    del runner
    torch.cuda.empty_cache()
    if args.engine:
        engine_steps(args.model, args.batch_size, args.backend)


def host_profile(runner, batch: ForwardBatch, top: int) -> None:
    """The Python functions that take the host's time while it queues five steps (cProfile's
    own-time, so the launch paths' costs show by function)."""
    import cProfile
    import pstats

    torch.cuda.synchronize()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5):
        runner.execute(batch)
    profiler.disable()
    torch.cuda.synchronize()
    stats = pstats.Stats(profiler)
    total = sum(row[2] for row in stats.stats.values()) / 5 * 1e3
    print(f"  host, per step: {total:.2f} ms under cProfile; by own time:")
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]
    for (path, line, name), (_, calls, own, cumulative, _) in rows:
        print(f"  {own / 5 * 1e3:8.3f} ms own {cumulative / 5 * 1e3:8.3f} ms cum "
              f"{calls // 5:5d}x  {'/'.join(path.rsplit('/', 2)[-2:])}:{line} {name}"[:150])


def engine_steps(model: str, sizes: list[int], backend: str) -> None:
    import random
    import statistics
    import time

    from lmforge import GenerationConfig, pipeline

    cfg = engine_config(backend, dtype="bfloat16", load_format="dummy",
                        max_batch_size=max(sizes), max_prefill_token_num=8192)
    with pipeline(model, backend_config=cfg) as pipe:
        engine = pipe.engine.loop.engine
        step, forward = engine.step, engine._forward
        walls: list[tuple[float, bool]] = []
        kinds: list[bool] = []

        def timed_forward(output, prev):
            kinds.append(all(n == 1 for n in output.num_new_tokens))
            return forward(output, prev)

        def timed_step():
            kinds.clear()
            start = time.perf_counter()
            step()
            if kinds:
                walls.append((time.perf_counter() - start, kinds[0]))

        engine.step, engine._forward = timed_step, timed_forward
        rng = random.Random(0)
        gen = GenerationConfig(max_new_tokens=128, ignore_eos=True, top_k=1)
        for size in sizes:
            prompts = [[rng.randrange(1000, 40000) for _ in range(128)] for _ in range(size)]
            pipe(prompts, gen_config=gen)  # warm-up
            walls.clear()
            start = time.perf_counter()
            pipe(prompts, gen_config=gen)
            total = time.perf_counter() - start
            decode = [w for w, is_decode in walls if is_decode]
            prefill = [w for w, is_decode in walls if not is_decode]
            print(f"\nengine, batch {size}, 128 -> 128: {total:.3f} s, {size * 128 / total:,.0f} "
                  f"tok/s; {len(decode)} decode steps, median {statistics.median(decode) * 1e3:.2f} "
                  f"ms, sum {sum(decode):.3f} s; {len(prefill)} prefill steps, sum "
                  f"{sum(prefill):.3f} s")


if __name__ == "__main__":
    main()
