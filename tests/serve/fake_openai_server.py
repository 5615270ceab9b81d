"""A small deterministic OpenAI-compatible server, run as a subprocess by the proxy and web UI tests.

It answers with its node name followed by the words of the last user message (the prompt for
/v1/completions), streamed one word per chunk with a fixed delay, so tests can see which node
served a request and observe streaming.

    python fake_openai_server.py --port 8001 --name a --model m [--delay 0.01] [--webui]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


def create_app(name: str, model: str, delay: float) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "fake"}]}

    async def answer(request: Request, chat: bool):
        body = await request.json()
        if body.get("model") != model:
            error = {"message": f"unknown model {body.get('model')!r}", "code": "model_not_found"}
            return JSONResponse({"error": error}, status_code=404)
        if chat:
            prompt = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
        else:
            prompt = body["prompt"]
        words = [f"{name}:"] + prompt.split()[: body.get("max_tokens") or None]
        kind = "chat.completion" if chat else "text_completion"

        def choice(text: str, finish: str | None) -> dict:
            if chat:
                return {"index": 0, "delta": {"content": text}, "finish_reason": finish}
            return {"index": 0, "text": text, "finish_reason": finish}

        if not body.get("stream"):
            await asyncio.sleep(delay * len(words))
            text = " ".join(words)
            content = (
                {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            )
            result = {"index": 0, **content, "finish_reason": "stop"}
            return {"id": "x", "object": kind, "model": model, "choices": [result]}

        async def events():
            for i, word in enumerate(words):
                await asyncio.sleep(delay)
                chunk = {
                    "id": "x",
                    "object": f"{kind}.chunk",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [choice(word if i == 0 else " " + word, None)],
                }
                yield f"data: {json.dumps(chunk)}\n\n"
            last = {
                "id": "x",
                "object": f"{kind}.chunk",
                "model": model,
                "choices": [choice("", "stop")],
            }
            yield f"data: {json.dumps(last)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await answer(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer(request, chat=False)

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="node")
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--webui", action="store_true")
    args = parser.parse_args()
    app = create_app(args.name, args.model, args.delay)
    if args.webui:
        from lmforge.serve.webui import mount_webui

        mount_webui(app)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Wait until ``url``/health answers 200; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become healthy in {timeout} s")


def start_fake(
    name: str,
    model: str = "fake-model",
    delay: float = 0.0,
    port: int | None = None,
    webui: bool = False,
) -> tuple[subprocess.Popen, str]:
    """Run this file as a server process; returns the process and its base URL once healthy."""
    port = port or free_port()
    cmd = [
        sys.executable,
        __file__,
        "--port",
        str(port),
        "--name",
        name,
        "--model",
        model,
        "--delay",
        str(delay),
    ] + (["--webui"] if webui else [])
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, proc)
    return proc, url


def start_lmforge(*args: str, timeout: float = 120.0) -> tuple[subprocess.Popen, str]:
    """Run ``lmforge ARGS --server-name 127.0.0.1 --server-port P``; returns the process and its
    base URL once healthy."""
    port = free_port()
    cmd = [shutil.which("lmforge"), *args, "--server-name", "127.0.0.1", "--server-port", str(port)]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=timeout)
    except BaseException:
        stop(proc)
        raise
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server process and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ServerThread:
    """An ASGI app served by uvicorn on loopback from a background thread of this process."""

    def __init__(self, app, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_healthy(self.url)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


if __name__ == "__main__":
    main()
