"""Serve :class:`FakeEngine` with the real server stack: ``python fake_server.py PORT [ARGS]``.

Registers an in-process plugin that adds ``GET /plugin/ping``, ``GET /plugin/boom`` (a route with
a bug: it raises) and rejects requests whose ``user`` is ``"blocked"``, so the server's plugin
hooks and its handling of unexpected errors are exercised end to end.
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

        @app.get("/plugin/boom")
        async def boom():
            raise RuntimeError("a bug in a route")

    @hookimpl
    def process_request(self, endpoint, request):
        if getattr(request, "user", None) == "blocked":
            return f"user 'blocked' may not call {endpoint}."
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-keys", nargs="*")
    parser.add_argument("--allow-origins", nargs="*")
    parser.add_argument("--delay", type=float, default=0.005)
    parser.add_argument("--session-len", type=int, default=64)
    parser.add_argument("--max-body-mb", type=float)
    parser.add_argument("--public-metrics", action="store_true")
    parser.add_argument("--public-docs", action="store_true")
    args = parser.parse_args()
    register_plugin(TestPlugin(), "test-plugin")
    engine = FakeEngine(session_len=args.session_len, delay=args.delay)
    # Options not given are not passed: the server's own defaults apply, as for the CLI.
    security = {
        "max_body_mb": args.max_body_mb,
        "public_metrics": args.public_metrics,
        "public_docs": args.public_docs,
    }
    serve_engine(
        engine,
        server_name=args.host,
        server_port=args.port,
        api_keys=args.api_keys,
        allow_origins=args.allow_origins,
        **{name: value for name, value in security.items() if value},
    )


if __name__ == "__main__":
    main()
