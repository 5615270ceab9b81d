"""CPU time of the API server per streamed token, without a GPU.

The real server (``serve_engine``: FastAPI, uvicorn, tokenization, SSE chunks) runs around an
engine whose forward is free (``profile_host_step.FreeRunner``), in a thread of the server or,
with ``--engine-process``, in its own process. A client in another process, so that its CPU is
not counted, keeps N streams of ``/v1/completions`` open (text prompts, greedy, ``ignore_eos``,
128 tokens each). Over a timed window the CPU seconds of the API side (the server process less
its engine thread: event loop, HTTP, tokenizing threads, and the engine process's reader) and of
the engine (thread or process: steps, detokenization) are divided by the tokens streamed. On a
GPU the engine also waits for the device; what the API side costs per token bounds how many
streamed tokens per second one API process serves, and in thread mode it holds the engine's GIL.

  python scripts/profile_serve_host.py [--streams 64 256 1024] [--seconds 5] [--repeats 3]
                                       [--engine-process] [--py-spy 256]

Prints, per stream count, the run of lowest API CPU per token among the repeats; ``--py-spy N``
also records the server (and its engine process) at N streams into ``py-spy-N.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from server_harness import free_port, wait_for_health

HERE = Path(__file__).resolve().parent
PROMPT = ("Write a short story about a lighthouse keeper who finds a message in a bottle, "
          "and describe the sea, the weather, the island and the people who once lived there. ")
OUTPUT_TOKENS = 128
MAX_STREAMS = 1024


# ---------------------------------------------------------------------------------- server


def free_engine():
    """An engine around the free runner, with the demo model's tokenizer."""
    import torch

    sys.path.insert(0, str(HERE))
    from lmforge.demo import demo_model_path
    from lmforge.engine.llm_engine import LLMEngine
    from lmforge.engine.scheduler import SchedulerConfig
    from lmforge.tokenizer import Tokenizer
    from profile_host_step import VOCAB, FreeRunner

    class FreeEngine(LLMEngine):
        """The free runner's vocabulary is small: prompt ids are folded into it (it ignores
        them), and its logits pick ordinary text tokens, which detokenize for real."""

        def add_request(self, request):
            request.prompt_ids = [token % VOCAB for token in request.prompt_ids]
            return super().add_request(request)

    torch.set_num_threads(1)
    tokenizer = Tokenizer.from_pretrained(demo_model_path())
    config = SchedulerConfig(max_batch_size=MAX_STREAMS, max_step_tokens=16384, block_size=64,
                             num_blocks=MAX_STREAMS * 6, max_session_len=4096)
    return FreeEngine(FreeRunner(), tokenizer, config, 4096, tokenizer.eos_token_ids, VOCAB)


def free_engine_main(commands, outputs, build_args: dict) -> None:
    """The engine process's entry point, building the free engine instead of a model."""
    from lmforge.engine import builder, process

    builder.build_llm_engine = lambda **_: free_engine()
    process.engine_main(commands, outputs, build_args)


def serve(port: int, engine_process: bool) -> None:
    """The server around a free engine; prints where the engine runs (its thread's or its
    process's id) once it is built."""
    from lmforge.chat_template import build_chat_template
    from lmforge.demo import demo_model_path
    from lmforge.engine import process
    from lmforge.engine.async_engine import AsyncEngine
    from lmforge.engine.loop import EngineLoop
    from lmforge.serve.server import serve_engine
    from lmforge.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(demo_model_path())
    if engine_process:
        process.engine_main = free_engine_main  # what the client starts
        loop = process.EngineProcessClient({})
        where = f"process {loop.process.pid}"
    else:
        loop = EngineLoop(free_engine())
        where = f"thread {loop._thread.native_id}"
    loop.vocab_size = tokenizer.vocab_size  # the front end checks text prompts' ids
    template = build_chat_template(demo_model_path(), None, tokenizer.chat_template)
    front = AsyncEngine(loop, tokenizer, template, "free", 4096, None)
    print(f"engine {where}", flush=True)
    serve_engine(front, server_name="127.0.0.1", server_port=port, log_level="error")


# ---------------------------------------------------------------------------------- client


async def _stream(port: int, body: bytes, counts: list[int], stop: asyncio.Event) -> None:
    """Send requests one after another on one connection, counting streamed chunks."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    try:
        while not stop.is_set():
            writer.write(head + body)
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(f"the server answered {status!r}")
            while await reader.readline() != b"\r\n":  # headers
                pass
            while True:  # chunked SSE: size lines, "data: ..." lines, blank lines
                line = await reader.readline()
                if line.startswith(b"data: {"):
                    counts[0] += 1
                elif line.startswith(b"data: [DONE]") or not line:
                    break
            while (await reader.readline()) not in (b"0\r\n", b""):
                pass
            await reader.readline()
    finally:
        writer.close()


async def _client(port: int, streams: int, seconds: float) -> None:
    body = json.dumps({"model": "free", "prompt": PROMPT, "max_tokens": OUTPUT_TOKENS,
                       "ignore_eos": True, "temperature": 0, "stream": True}).encode()
    counts, stop = [0], asyncio.Event()
    tasks = [asyncio.create_task(_stream(port, body, counts, stop)) for _ in range(streams)]
    # Ramp up: every stream running and past its first request's start.
    while counts[0] < streams * 4:
        await asyncio.sleep(0.05)
        if any(t.done() for t in tasks):
            break
    start_count, start = counts[0], time.perf_counter()
    print("go", flush=True)
    await asyncio.sleep(seconds)
    tokens, wall = counts[0] - start_count, time.perf_counter() - start
    print(f"stop {tokens} {wall}", flush=True)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()


# ---------------------------------------------------------------------------------- driver


def _cpu_seconds(path: str) -> float:
    """CPU seconds (user and system) of the process or thread whose ``stat`` file is ``path``."""
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    engine_stat: str  # the engine thread's or process's stat file
    engine_in_process: bool

    def cpu_seconds(self) -> tuple[float, float]:
        """The API side's CPU seconds and the engine's."""
        server = _cpu_seconds(f"/proc/{self.process.pid}/stat")
        engine = _cpu_seconds(self.engine_stat)
        return (server if self.engine_in_process else server - engine), engine


def _start_server(port: int, engine_process: bool) -> Server:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, __file__, "--serve", str(port)]
    process = subprocess.Popen(args + ["--engine-process"] * engine_process, env=env,
                               stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline().split()
    if line[:1] != ["engine"]:
        process.kill()
        raise SystemExit("the server did not start")
    kind, ident = line[1], int(line[2])
    stat = f"/proc/{ident}/stat" if kind == "process" else f"/proc/{process.pid}/task/{ident}/stat"
    try:
        wait_for_health(port, process, timeout_s=120, interval_s=0.1)
    except SystemExit:
        process.kill()
        raise
    return Server(process, port, stat, kind == "process")


def measure(server: Server, streams: int, seconds: float, py_spy: Path | None) -> dict:
    client = subprocess.Popen([sys.executable, __file__, "--client", str(server.port),
                               str(streams), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert client.stdout.readline().strip() == "go", "the client stopped before its window"
    spy = None
    if py_spy is not None:
        spy = subprocess.Popen(["py-spy", "record", "-p", str(server.process.pid), "-d",
                                str(int(seconds)), "-r", "200", "-f", "raw", "-o", str(py_spy),
                                "--nonblocking", "--subprocesses"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api0, engine0 = server.cpu_seconds()
    stop = client.stdout.readline().split()
    api1, engine1 = server.cpu_seconds()
    if client.wait() != 0 or stop[0] != "stop":
        raise SystemExit("the client failed")
    if spy is not None:
        spy.wait()
    tokens, wall = int(stop[1]), float(stop[2])
    api, engine = api1 - api0, engine1 - engine0
    return {"tokens_per_s": tokens / wall, "total_us": (api + engine) / tokens * 1e6,
            "engine_us": engine / tokens * 1e6, "api_us": api / tokens * 1e6,
            "cores": (api + engine) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--py-spy", type=int, metavar="STREAMS",
                        help="record the server with py-spy at this stream count "
                             "(raw stacks in py-spy-STREAMS.txt)")
    parser.add_argument("--engine-process", action="store_true",
                        help="the engine in its own process (else in a thread of the server)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", type=float, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.engine_process)
    if args.client:
        port, streams, seconds = args.client
        return asyncio.run(_client(int(port), int(streams), seconds))
    if max(args.streams) > MAX_STREAMS:
        parser.error(f"--streams: at most {MAX_STREAMS}")
    if args.py_spy is not None and shutil.which("py-spy") is None:
        parser.error("--py-spy needs the py-spy command: pip install py-spy")
    server = _start_server(free_port(), args.engine_process)
    engine = "engine process" if args.engine_process else "engine thread"
    try:
        print(f"{'streams':>7} | {'tokens/s':>9} | {'API us/token':>12} {engine + ' us':>17} "
              f"{'total us':>8} | {'cores':>5}")
        for streams in args.streams:
            spy = Path(f"py-spy-{streams}.txt") if args.py_spy == streams else None
            runs = [measure(server, streams, args.seconds, spy if i == 0 else None)
                    for i in range(args.repeats)]
            r = min(runs, key=lambda run: run["api_us"])
            print(f"{streams:>7} | {r['tokens_per_s']:>9.0f} | {r['api_us']:>12.1f} "
                  f"{r['engine_us']:>17.1f} {r['total_us']:>8.1f} | {r['cores']:>5.2f}",
                  flush=True)
    finally:
        server.process.terminate()
        server.process.wait(30)


if __name__ == "__main__":
    main()
