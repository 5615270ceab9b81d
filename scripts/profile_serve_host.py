"""CPU time of the API server per streamed token, without a GPU.

The real server (``serve_engine``: FastAPI, uvicorn, tokenization, detokenization, SSE chunks)
runs in one process around an engine whose forward is free (``profile_host_step.FreeRunner``),
with the engine in a thread of that process. A client in another process, so that its CPU is not
counted, keeps N streams of ``/v1/completions`` open (text prompts, greedy, ``ignore_eos``).
Over a timed window the server's CPU seconds, split into its engine thread and the rest (the
event loop, HTTP, tokenizing threads), are divided by the tokens streamed. On a GPU the engine
thread also waits for the device, so what the rest costs per token bounds how many streamed
tokens per second one API process can serve, and in thread mode it takes the engine's GIL.

  python scripts/profile_serve_host.py [--streams 64 256 1024] [--seconds 5] [--repeats 3]
  python scripts/profile_serve_host.py --py-spy 256   # also sample the server with py-spy

Prints, per stream count, the best of the repeats (lowest total CPU per token).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPT = ("Write a short story about a lighthouse keeper who finds a message in a bottle, "
          "and describe the sea, the weather, the island and the people who once lived there. ")
OUTPUT_TOKENS = 128
MAX_STREAMS = 1024


# ---------------------------------------------------------------------------------- server


def serve(port: int) -> None:
    """The server around a free engine; prints the engine thread's id once it listens."""
    import torch

    sys.path.insert(0, str(HERE))
    from lmforge.chat_template import build_chat_template
    from lmforge.demo import demo_model_path
    from lmforge.engine.async_engine import AsyncEngine
    from lmforge.engine.llm_engine import LLMEngine
    from lmforge.engine.loop import EngineLoop
    from lmforge.engine.scheduler import SchedulerConfig
    from lmforge.serve.server import serve_engine
    from lmforge.tokenizer import Tokenizer
    from profile_host_step import VOCAB, FreeRunner

    class FreeEngine(LLMEngine):
        """The free runner's vocabulary is small: prompt ids are folded into it (it ignores
        them), and its logits pick ordinary text tokens, which detokenize for real."""

        def add_request(self, request):
            request.prompt_ids = [token % VOCAB for token in request.prompt_ids]
            return super().add_request(request)

    torch.set_num_threads(1)
    path = demo_model_path()
    tokenizer = Tokenizer.from_pretrained(path)
    config = SchedulerConfig(max_batch_size=MAX_STREAMS, max_step_tokens=16384, block_size=64,
                             num_blocks=MAX_STREAMS * 6, max_session_len=4096)
    engine = FreeEngine(FreeRunner(), tokenizer, config, 4096, tokenizer.eos_token_ids, VOCAB)
    loop = EngineLoop(engine)
    loop.vocab_size = tokenizer.vocab_size  # the front end checks text prompts' ids
    template = build_chat_template(path, None, tokenizer.chat_template)
    front = AsyncEngine(loop, tokenizer, template, "free", 4096, None)
    print(f"engine-thread {loop._thread.native_id}", flush=True)
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


def _cpu_seconds(pid: int, tid: int) -> tuple[float, float]:
    """The process's CPU seconds and those of its thread ``tid``."""
    tick = os.sysconf("SC_CLK_TCK")

    def read(path: str) -> float:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

    return read(f"/proc/{pid}/stat"), read(f"/proc/{pid}/task/{tid}/stat")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(port: int) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env,
                              stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if not line.startswith("engine-thread"):
        server.kill()
        raise SystemExit("the server did not start")
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server, int(line.split()[1])
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the server did not answer /health")


def measure(port: int, pid: int, tid: int, streams: int, seconds: float,
            py_spy: Path | None) -> dict[str, float]:
    client = subprocess.Popen([sys.executable, __file__, "--client", str(port), str(streams),
                               str(seconds)], stdout=subprocess.PIPE, text=True)
    assert client.stdout.readline().strip() == "go", "the client stopped before its window"
    spy = None
    if py_spy is not None:
        spy = subprocess.Popen(["py-spy", "record", "-p", str(pid), "-d", str(int(seconds)),
                                "-r", "200", "-f", "raw", "-o", str(py_spy), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    total0, engine0 = _cpu_seconds(pid, tid)
    stop = client.stdout.readline().split()
    total1, engine1 = _cpu_seconds(pid, tid)
    if client.wait() != 0 or stop[0] != "stop":
        raise SystemExit("the client failed")
    if spy is not None:
        spy.wait()
    tokens, wall = int(stop[1]), float(stop[2])
    total, engine = total1 - total0, engine1 - engine0
    return {"tokens_per_s": tokens / wall, "total_us": total / tokens * 1e6,
            "engine_us": engine / tokens * 1e6, "api_us": (total - engine) / tokens * 1e6,
            "server_cores": total / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--py-spy", type=int, metavar="STREAMS",
                        help="record the server with py-spy at this stream count "
                             "(raw stacks in py-spy-STREAMS.txt)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", type=float, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    if args.client:
        port, streams, seconds = args.client
        return asyncio.run(_client(int(port), int(streams), seconds))
    if max(args.streams) > MAX_STREAMS:
        parser.error(f"--streams: at most {MAX_STREAMS}")
    port = _free_port()
    server, tid = _start_server(port)
    try:
        print(f"{'streams':>7} | {'tokens/s':>9} | {'server us/token':>15} {'engine thread':>13} "
              f"{'rest (API)':>10} | {'cores':>5}")
        for streams in args.streams:
            spy = Path(f"py-spy-{streams}.txt") if args.py_spy == streams else None
            runs = [measure(port, server.pid, tid, streams, args.seconds,
                            spy if i == 0 else None) for i in range(args.repeats)]
            r = min(runs, key=lambda run: run["total_us"])
            print(f"{streams:>7} | {r['tokens_per_s']:>9.0f} | {r['total_us']:>15.1f} "
                  f"{r['engine_us']:>13.1f} {r['api_us']:>10.1f} | {r['server_cores']:>5.2f}",
                  flush=True)
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
