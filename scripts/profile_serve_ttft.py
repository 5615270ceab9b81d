"""Where a streamed request's time to first token goes at low load, hop by hop, on a CPU or a GPU.

The real ``serve api_server`` (engine in its own process) serves a model folder (a tiny random
Llama on a CPU). Both of its processes time-stamp each hop of a request's first token on the
shared monotonic clock; a client sends one streamed ``/v1/completions`` request at a time, with
the engine idle in between, and reads until its first chunk. Prints each hop's median and p90 in
milliseconds over the requests:

  send → handler (HTTP and request parse) → tokenized (prompt encoded in a worker thread) →
  to engine (ADD written to the pipe) → engine got it → admitted → step starts → forward done →
  tokens on host → output built (detokenized) → outputs sent → front end read them → event loop
  has them → chunk written → client has it

  python scripts/profile_serve_ttft.py MODEL_DIR [--requests 30] [--prompt-words 40]
      [--dtype bfloat16] [--load-format dummy]
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from server_harness import free_port, wait_for_health

MARKS_ENV = "LMFORGE_TTFT_MARKS"
HOPS = ["handler", "tokenized", "to_engine", "engine_got", "admitted", "step", "forward",
        "tokens", "output", "engine_sent", "front_read", "loop_has", "chunk"]


# ---------------------------------------------------------------------------------- marks


def _mark(name: str) -> None:
    with open(Path(os.environ[MARKS_ENV]) / f"{os.getpid()}.txt", "a") as f:
        f.write(f"{name} {time.perf_counter_ns()}\n")


def _wrap(owner, attr: str, before: str | None = None, after: str | None = None,
          when=None) -> None:
    """Mark ``before`` and ``after`` a call of ``owner.attr`` (only where ``when(*args)``)."""
    original = getattr(owner, attr)

    @functools.wraps(original)
    def traced(*args, **kwargs):
        on = when is None or when(*args, **kwargs)
        if on and before:
            _mark(before)
        result = original(*args, **kwargs)
        if on and after:
            _mark(after)
        return result

    setattr(owner, attr, traced)


def _wrap_async(owner, attr: str, before: str) -> None:
    original = getattr(owner, attr)

    @functools.wraps(original)
    async def traced(*args, **kwargs):
        _mark(before)
        return await original(*args, **kwargs)

    setattr(owner, attr, traced)


def _trace_engine() -> None:
    from lmforge.engine import llm_engine, output_processor, process

    _wrap(process, "_apply", "engine_got", "admitted", when=lambda _e, cmd, *a: cmd[0] == "add")
    _wrap(process, "_pack", "engine_sent", when=lambda *m: m[0] == "outputs" and m[1])
    _wrap(llm_engine.LLMEngine, "step", "step")
    _wrap(llm_engine.LLMEngine, "_forward", after="forward")
    _wrap(output_processor.OutputProcessor, "process", "tokens")
    _wrap(output_processor.OutputProcessor, "_accept", after="output")


def traced_engine_main(*args, **kwargs) -> None:
    """The engine process's entry point, with its hops marked."""
    from lmforge.engine import process

    _trace_engine()
    process.engine_main(*args, **kwargs)


def serve(port: int, model: str, dtype: str, load_format: str) -> None:
    from lmforge.cli.options import build_engine_config
    from lmforge.engine import async_engine, inbox, process
    from lmforge.serve import app, completions, server

    process.engine_main = traced_engine_main  # what the front end starts
    _wrap_async(app, "create_completion", "handler")
    _wrap(async_engine.AsyncEngine, "encode_prompt", after="tokenized")
    # Marked before the write: the engine may read the command before the write returns.
    _wrap(process.EngineProcessClient, "_send", "to_engine", when=lambda _c, *m: m[0] == "add")
    _wrap(process.EngineProcessClient, "_deliver", "front_read")
    _wrap(inbox.Inbox, "_deliver", "loop_has")
    _wrap(completions, "sse", "chunk")
    config = build_engine_config("pytorch", dtype=dtype, load_format=load_format)
    server.run_api_server(model, backend_config=config, engine_process=True,
                          server_name="127.0.0.1", server_port=port, log_level="ERROR")


# ---------------------------------------------------------------------------------- client


def _first_chunk(conn: http.client.HTTPConnection, body: bytes) -> tuple[int, int]:
    """Send one streamed request on an open connection; the send and first-chunk times, then
    read it to its end."""
    start = time.perf_counter_ns()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    reply = conn.getresponse()
    while not reply.readline().startswith(b"data: {"):
        pass
    first = time.perf_counter_ns()
    reply.read()
    return start, first


def _hops(marks: list[tuple[int, str]], start: int, first: int) -> list[float]:
    """Milliseconds from each hop to the next for the request sent at ``start``."""
    times = [start]
    for hop in HOPS:
        at = next((t for t, name in marks if name == hop and t >= times[-1]), None)
        if at is None or at > first:
            raise SystemExit(f"no '{hop}' mark between the request and its first chunk")
        times.append(at)
    times.append(first)
    return [(b - a) / 1e6 for a, b in zip(times, times[1:], strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model folder (a tiny random Llama on a CPU)")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--prompt-words", type=int, default=40)
    parser.add_argument("--dtype", default="auto", help="as serve's (bfloat16 on the GPU check)")
    parser.add_argument("--load-format", default="auto", help="as serve's (dummy: random weights)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.model, args.dtype, args.load_format)
    port = free_port()
    marks_dir = Path(tempfile.mkdtemp(prefix="ttft-marks-"))
    env = {**os.environ, MARKS_ENV: str(marks_dir), "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, __file__, args.model, "--serve", str(port),
                               "--dtype", args.dtype, "--load-format", args.load_format],
                              env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for_health(port, server, timeout_s=300)
        time.sleep(1)
        prompt = " ".join(["lighthouse"] * args.prompt_words)
        body = json.dumps({"model": Path(args.model).name, "prompt": prompt, "max_tokens": 4,
                           "ignore_eos": True, "temperature": 0, "stream": True}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", port)  # kept alive, as clients do
        for _ in range(3):  # warm-up
            _first_chunk(conn, body)
        times = []
        for _ in range(args.requests):
            time.sleep(0.05)  # the engine idle, as at low load
            times.append(_first_chunk(conn, body))
        conn.close()
    finally:
        server.terminate()
        server.wait(30)
    marks = sorted((int(t), name) for f in marks_dir.iterdir()
                   for name, t in (line.split() for line in f.read_text().splitlines()))
    rows = [_hops(marks, start, first) for start, first in times]
    names = ["send", *HOPS]
    print(f"{'hop':>24} | {'p50 ms':>7} | {'p90 ms':>7}")
    for i, name in enumerate(names):
        column = sorted(row[i] for row in rows)
        to = HOPS[i] if i < len(HOPS) else "client"
        print(f"{name + ' → ' + to:>24} | {statistics.median(column):7.3f} | "
              f"{column[int(len(column) * 0.9)]:7.3f}")
    total = sorted(sum(row) for row in rows)
    print(f"{'TTFT':>24} | {statistics.median(total):7.3f} | {total[int(len(total) * 0.9)]:7.3f}")


if __name__ == "__main__":
    main()
