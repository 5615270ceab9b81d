"""What happened while the slowest requests waited for their first token, on a CPU or a GPU.

The real ``serve api_server`` (engine in its own process, at its defaults unless
``--max-batch-size`` or ``--max-kv-tokens`` is given: on a CPU give the GPU's, so the block
manager is as large as there) serves a model folder; a client sends ShareGPT prompts as text
to ``/v1/completions`` (streamed, greedy, ``ignore_eos``, each with its dataset's output length)
as a Poisson process. Both server processes log, on the shared monotonic clock, every garbage
collection of the middle or oldest generation and any longer than 2 ms, each engine step longer
than ``--slow-ms`` (with its batches), each gap that long between two output messages of a busy
engine, each stall that long of the API process's event loop, and each module first imported
after start-up. A stall seen in both processes at once comes from outside them (the machine).
The load runs ``--runs`` times on the same server (a tail only in the first run is a first-use
cost); for each run it prints the TTFT and inter-chunk percentiles, the collector's pauses per
process, and for each of the slowest requests what was logged between its send and its first
chunk.

  python scripts/profile_serve_tail.py MODEL_DIR [--num-prompts 200] [--request-rate 4]
      [--runs 2] [--max-batch-size 1024] [--max-kv-tokens 790000] [--max-tokens N]
      [--dtype bfloat16] [--load-format dummy] [--slow-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from server_harness import free_port, wait_for_health

LOG_ENV = "LMFORGE_TAIL_LOG"
SLOW_ENV = "LMFORGE_TAIL_SLOW_S"
SAMPLE_S = 0.1  # a step longer than this has its main thread's stack dumped every SAMPLE_S


# ---------------------------------------------------------------------------------- server


def _log(line: str) -> None:
    with open(Path(os.environ[LOG_ENV]) / f"{os.getpid()}.txt", "a") as f:
        f.write(line + "\n")


def _trace_gc(proc: str) -> None:
    started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took = time.perf_counter() - started[0]
        if info["generation"] >= 1 or took > 0.002:
            _log(f"{proc} {started[0]:.6f} {took:.6f} gc-gen{info['generation']}")

    gc.callbacks.append(on_gc)


class _LateImports:
    """Logs each module imported once start-up is over (a first use that serving pays for)."""

    def __init__(self, proc: str) -> None:
        self.proc = proc

    def find_spec(self, name, path=None, target=None):
        if name not in sys.modules:
            _log(f"{self.proc} {time.perf_counter():.6f} 0 import {name}")
        return None  # the usual finders import it


def _trace_settle(module, proc: str) -> None:
    settle = module.settle_after_start_up

    def traced() -> None:
        settle()
        _log(f"{proc} {time.perf_counter():.6f} 0 settled frozen={gc.get_freeze_count()}")
        sys.meta_path.insert(0, _LateImports(proc))

    module.settle_after_start_up = traced


def traced_engine_main(*args, **kwargs) -> None:
    """The engine process's entry point, with collections, slow steps (and the batches they
    built: sequences, tokens, longest prompt chunk) and gaps between outputs logged."""
    from lmforge.engine import llm_engine, process, scheduler

    slow = float(os.environ[SLOW_ENV])
    _trace_gc("engine")
    _trace_settle(process, "engine")
    _trace_compiles()
    step, build, batches = llm_engine.LLMEngine.step, scheduler.Scheduler.build_batch, []
    # faulthandler's watchdog is a C thread: it samples the stack even while the step holds the
    # interpreter's lock, which a Python thread could not.
    stacks = open(Path(os.environ[LOG_ENV]) / f"stacks-{os.getpid()}.txt", "wb")

    def traced_build(self, output):
        batch = build(self, output)
        batches.append(f"{len(batch.q_lens)}/{sum(batch.q_lens)}/{max(batch.q_lens, default=0)}")
        return batch

    def timed_step(self) -> None:
        batches.clear()
        before = os.fstat(stacks.fileno()).st_size
        faulthandler.dump_traceback_later(SAMPLE_S, repeat=True, file=stacks)
        start = time.perf_counter()
        step(self)
        took = time.perf_counter() - start
        faulthandler.cancel_dump_traceback_later()
        if took > slow:
            after = os.fstat(stacks.fileno()).st_size
            _log(f"engine {start:.6f} {took:.6f} step seqs/tokens/longest {' '.join(batches)}"
                 + (f" [stacks {stacks.name} {before} {after}]" if after > before else ""))

    llm_engine.LLMEngine.step = timed_step
    pack, last = process._pack, [None]

    def timed_pack(*message):
        if message[0] == process.OUTPUTS:
            now = time.perf_counter()
            if last[0] is not None and now - last[0] > slow and message[1]:
                _log(f"engine {last[0]:.6f} {now - last[0]:.6f} outputs-gap")
            idle = not (message[2]["num_running"] or message[2]["num_waiting"])
            last[0] = None if idle else now  # a gap after going idle is no stall
        return pack(*message)

    process._pack = timed_pack
    scheduler.Scheduler.build_batch = traced_build
    process.engine_main(*args, **kwargs)


def _trace_compiles() -> None:
    """Log every Triton compile after the engine's warm-up (its compile watch's hooks)."""
    try:
        from lmforge_torch_triton import compile_watch
    except ImportError:
        return
    before, after, began = compile_watch._before, compile_watch._after, [0.0]

    def traced_before(**kwargs) -> bool:
        began[0] = time.perf_counter()
        return before(**kwargs)

    def traced_after(**kwargs) -> bool:
        now = time.perf_counter()
        _log(f"engine {began[0]:.6f} {now - began[0]:.6f} triton-compile "
             f"{str(kwargs.get('repr', '?'))[:80]}")
        return after(**kwargs)

    compile_watch._before, compile_watch._after = traced_before, traced_after


def main_thread_samples(path: str, start: int, end: int, frames: int = 8) -> list[str]:
    """The engine's main-thread stacks faulthandler wrote between two offsets of its file,
    innermost ``frames`` of each, as one line per sample."""
    with open(path, "rb") as f:
        f.seek(start)
        text = f.read(end - start).decode(errors="replace")
    samples = []
    for dump in text.split("Timeout (")[1:]:
        blocks = dump.split("\n\n")
        # The main thread is the one whose stack runs through the engine's step.
        main = next((b for b in blocks if "llm_engine.py" in b), "")
        lines = [ln.strip() for ln in main.splitlines() if ln.strip().startswith("File ")]
        where = [(Path(ln.split('"')[1]).name, ln.rsplit("line ", 1)[-1]) for ln in lines]
        samples.append(" <- ".join(f"{name}:{line}" for name, line in where[:frames]))
    return samples


def _watch_event_loop(slow: float) -> None:
    """Log each stall of the API process's event loop (a 10 ms timer that fires late)."""
    from lmforge.engine import inbox

    init = inbox.Inbox.__init__

    def traced_init(self, loop) -> None:
        init(self, loop)
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            if now - last[0] > slow:
                _log(f"api {last[0]:.6f} {now - last[0]:.6f} event-loop-stall")
            last[0] = now
            loop.call_later(0.01, tick)

        loop.call_soon_threadsafe(tick)

    inbox.Inbox.__init__ = traced_init


def serve(args: argparse.Namespace, port: int) -> None:
    from lmforge.cli.options import build_engine_config
    from lmforge.engine import process
    from lmforge.serve import server, warmup

    _trace_gc("api")
    _trace_settle(warmup, "api")
    _watch_event_loop(args.slow_ms / 1e3)
    process.engine_main = traced_engine_main  # what the front end starts
    config = build_engine_config("pytorch", max_batch_size=args.max_batch_size,
                                 max_kv_tokens=args.max_kv_tokens, dtype=args.dtype,
                                 load_format=args.load_format)
    server.run_api_server(args.model, backend_config=config, engine_process=True,
                          server_name="127.0.0.1", server_port=port, log_level="ERROR")


# ---------------------------------------------------------------------------------- client


async def _request(client, model: str, prompt: str, max_tokens: int, timings: list) -> None:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": True,
            "temperature": 0, "ignore_eos": True}
    sent, chunks = time.perf_counter(), []
    async with client.stream("POST", "/v1/completions", json=body) as reply:
        async for line in reply.aiter_lines():
            if line.startswith("data: {"):
                chunks.append(time.perf_counter())
    timings.append((sent, chunks))


async def load(args: argparse.Namespace, port: int) -> list:
    import httpx
    from lmforge.bench.workload import sharegpt_requests
    from transformers import AutoTokenizer

    requests = sharegpt_requests(args.num_prompts, tokenizer_path=args.model)
    prompts = AutoTokenizer.from_pretrained(args.model).batch_decode(
        [r.prompt_ids for r in requests])
    rng, timings, tasks = random.Random(0), [], []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=None,
                                 limits=httpx.Limits(max_connections=None)) as client:
        model = (await client.get("/v1/models")).json()["data"][0]["id"]
        for request, prompt in zip(requests, prompts, strict=True):
            max_tokens = min(request.output_len, args.max_tokens or request.output_len)
            tasks.append(asyncio.create_task(_request(client, model, prompt, max_tokens,
                                                      timings)))
            await asyncio.sleep(rng.expovariate(args.request_rate))
        await asyncio.gather(*tasks)
    return timings


# ---------------------------------------------------------------------------------- report


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] * 1e3


def report(timings: list, events: list[tuple[float, float, str, str]], slowest: int) -> None:
    ttft = [chunks[0] - sent for sent, chunks in timings]
    gaps = [b - a for _, chunks in timings for a, b in zip(chunks, chunks[1:], strict=False)]
    print(f"TTFT ms p50 {_pct(ttft, .5):.1f}  p90 {_pct(ttft, .9):.1f}  p99 {_pct(ttft, .99):.1f}"
          f"  max {max(ttft) * 1e3:.1f}")
    print(f"inter-chunk ms p50 {_pct(gaps, .5):.1f}  p99 {_pct(gaps, .99):.1f}"
          f"  max {max(gaps) * 1e3:.1f}")
    serving = min(sent for sent, _ in timings)
    done = max(chunks[-1] for _, chunks in timings)
    events = [e for e in events if e[0] <= done]  # this run and what came before it
    late = sorted({f"{p}: {what[7:]}" for t, _, p, what in events
                   if what.startswith("import ") and t >= serving})
    print(f"modules first imported under load: {', '.join(late) or 'none'}")
    for proc in ("api", "engine"):
        settled = [what for _, _, p, what in events if p == proc and what.startswith("settled")]
        print(f"{proc}: {settled[0] if settled else 'never settled'}")
        for gen in range(3):
            pauses = [took for t, took, p, what in events
                      if p == proc and what == f"gc-gen{gen}" and t >= serving]
            if pauses:
                print(f"  while serving, gen-{gen} collections: {len(pauses)}, "
                      f"max {max(pauses) * 1e3:.1f} ms, total {sum(pauses) * 1e3:.1f} ms")
    print(f"\nslowest {slowest} first tokens, with what the servers logged meanwhile:")
    sampled = set()
    for sent, chunks in sorted(timings, key=lambda t: t[0] - t[1][0])[:slowest]:
        during = [(t, took, p, what) for t, took, p, what in events
                  if t < chunks[0] and t + took > sent]
        print(f"  sent at {sent - serving:6.2f} s, TTFT {(chunks[0] - sent) * 1e3:7.1f} ms: "
              + ("; ".join(f"{p} {what.split(' [stacks')[0]} {took * 1e3:.0f} ms at "
                           f"+{(t - sent) * 1e3:.0f}" for t, took, p, what in during)
                 or "nothing"))
        for t, _, _, what in during:
            if " [stacks " in what and t not in sampled:
                sampled.add(t)
                path, start, end = what.split(" [stacks ")[1].rstrip("]").split()
                for sample in main_thread_samples(path, int(start), int(end)):
                    print(f"      stack: {sample}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model folder with its tokenizer")
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--request-rate", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, help="default: the server's")
    parser.add_argument("--max-kv-tokens", type=int, help="default: the server's")
    parser.add_argument("--max-tokens", type=int, help="cap each reply (default: the dataset's)")
    parser.add_argument("--dtype", default="auto", help="as serve's (bfloat16 on the GPU check)")
    parser.add_argument("--load-format", default="auto",
                        help="dummy: random weights for a folder that holds only config.json")
    parser.add_argument("--slow-ms", type=float, default=50.0)
    parser.add_argument("--slowest", type=int, default=8)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args, args.serve)
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="serve-tail-"))
    env = {**os.environ, LOG_ENV: str(log_dir), SLOW_ENV: str(args.slow_ms / 1e3)}
    server = subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--serve", str(port)],
                              env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for_health(port, server, timeout_s=900, interval_s=0.5)
        runs = [asyncio.run(load(args, port)) for _ in range(args.runs)]
    finally:
        server.terminate()
        server.wait(60)
    events = []
    for f in log_dir.glob("[0-9]*.txt"):
        for line in f.read_text().splitlines():
            proc, at, took, what = line.split(" ", 3)
            events.append((float(at), float(took), proc, what))
    (log_dir / "requests.json").write_text(json.dumps(runs))
    for number, timings in enumerate(runs, 1):
        print(f"\n=== run {number} of {len(runs)} on the same server")
        report(timings, events, args.slowest)
    print(f"\nlogs: {log_dir}")


if __name__ == "__main__":
    main()
