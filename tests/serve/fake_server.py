"""Serve :class:`FakeEngine` with the real server stack: ``python fake_server.py PORT [ARGS]``.

Registers an in-process plugin that adds ``GET /plugin/ping`` and rejects requests whose
``user`` is ``"blocked"``, so the server's plugin hooks are exercised end to end.
"""

from __future__ import annotations

import argparse

from fake_engine import FakeEngine
from lmforge import hookimpl
from lmforge.plugins import register_plugin
from lmforge.serve.server import serve_engine


class TestPlugin:
    @hookimpl
    def register_routes(self, app):
        @app.get("/plugin/ping")
        async def ping():
            return {"pong": True}

    @hookimpl
    def process_request(self, endpoint, request):
        if getattr(request, "user", None) == "blocked":
            return f"user 'blocked' may not call {endpoint}."
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--api-keys", nargs="*")
    parser.add_argument("--delay", type=float, default=0.005)
    parser.add_argument("--session-len", type=int, default=64)
    args = parser.parse_args()
    register_plugin(TestPlugin(), "test-plugin")
    engine = FakeEngine(session_len=args.session_len, delay=args.delay)
    serve_engine(
        engine,
        server_name="127.0.0.1",
        server_port=args.port,
        api_keys=args.api_keys,
        allow_origins=["*"],  # the CLI's default
    )


if __name__ == "__main__":
    main()
