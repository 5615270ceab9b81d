"""The FastAPI application of the OpenAI-compatible server.

Handlers never run model code: they translate requests, then await the engine's async output
generator, whose step loop runs in its own thread (prompts are tokenized in worker threads).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..plugins import call_hook
from ..version import __version__
from .chat import create_chat_completion
from .completions import create_completion
from .errors import APIError, ContainErrors, install_error_handlers
from .interactive import InteractiveSessions, chat_interactive
from .openapi import ERROR_RESPONSES, describe, streamed
from .protocol import (
    CancelResponse,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    InteractiveRequest,
    InteractiveResponse,
    ModelCard,
    ModelList,
)
from .security import DEFAULT_MAX_BODY_MB, MIB, GuardPaths, LimitBody, api_key_check
from .state import ServerState, check_text
from .webui import mount_webui

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DOCS_PATHS = frozenset({"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


class _CountRequests:
    """ASGI middleware that counts responses by route and status for ``/metrics``.

    Plain ASGI (not ``BaseHTTPMiddleware``) so streaming responses pass through untouched. The
    route's template, not the raw path, labels a request, so label values stay few.
    """

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", "other")  # set once routing matched
                self.state.metrics.count_http(route, message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)


def _run_request_hooks(endpoint: str, request: Any) -> None:
    for verdict in call_hook("process_request", endpoint=endpoint, request=request):
        if isinstance(verdict, str):
            raise APIError(400, verdict, code="rejected")


def _checked(endpoint: str, req: Any) -> None:
    check_text(req)
    _run_request_hooks(endpoint, req)


def create_app(
    engine: Any,
    api_keys: list[str] | None = None,
    allow_origins: list[str] | None = None,
    allow_credentials: bool = False,
    allow_methods: list[str] | None = None,
    allow_headers: list[str] | None = None,
    max_body_mb: float = DEFAULT_MAX_BODY_MB,
    public_metrics: bool = False,
    public_docs: bool = False,
) -> FastAPI:
    """Build the server app around an engine (see :mod:`lmforge.engine.async_engine`).

    :param api_keys: when given, every ``/v1`` route needs ``Authorization: Bearer <key>``
        with one of them, and so do ``/metrics`` and the API docs unless made public.
    :param allow_origins: enables CORS for these origins (with the methods and headers given);
        without it, browsers on other origins cannot call the server.
    :param max_body_mb: the largest request body accepted, in MiB (larger: 413).
    :param public_metrics: serve ``/metrics`` without a key even when keys are set.
    :param public_docs: serve ``/openapi.json``, ``/docs`` and ``/redoc`` without a key.
    """
    state = ServerState(engine, api_keys=frozenset(k for k in api_keys or () if k))
    sessions = InteractiveSessions()
    app = FastAPIOffline(
        title="lmforge OpenAI-compatible API",
        version=__version__,
        description=f"Serves {engine.model_name} with OpenAI's chat and completion APIs.",
    )
    app.state.server = state
    install_error_handlers(app)

    v1 = APIRouter(dependencies=[Depends(api_key_check(state.api_keys))])

    @v1.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES)
    async def list_models() -> ModelList:
        card = ModelCard(
            id=state.model_name, root=state.model_name, max_model_len=engine.session_len
        )
        return ModelList(data=[card])

    @v1.post(
        "/v1/chat/completions",
        response_model=ChatCompletionResponse,
        responses=streamed("text/event-stream", ChatCompletionResponse),
    )
    async def chat_completions(req: ChatCompletionRequest, raw: Request) -> Response:
        """Chat completion in OpenAI's format; ``stream=true`` answers with server-sent events."""
        _checked("/v1/chat/completions", req)
        return await create_chat_completion(state, req, raw)

    @v1.post(
        "/v1/completions",
        response_model=CompletionResponse,
        responses=streamed("text/event-stream", CompletionResponse),
    )
    async def completions(req: CompletionRequest, raw: Request) -> Response:
        """Text completion in OpenAI's format (no chat template applied)."""
        _checked("/v1/completions", req)
        return await create_completion(state, req, raw)

    @v1.post(
        "/v1/chat/interactive",
        response_model=InteractiveResponse | CancelResponse,
        responses=streamed("application/x-ndjson", InteractiveResponse),
    )
    async def interactive(req: InteractiveRequest, raw: Request) -> Response:
        """Multi-turn chat whose history (KV cache) the server keeps per ``session_id``."""
        _checked("/v1/chat/interactive", req)
        return await chat_interactive(state, sessions, req, raw)

    app.include_router(v1)

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 while the engine serves; 503 with the reason once it has stopped."""
        error = getattr(getattr(engine, "loop", None), "error", None)
        if error:
            return JSONResponse({"status": "error", "message": error}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus metrics of the engine and the server (text exposition format)."""
        return PlainTextResponse(state.metrics.render(engine.stats()), media_type=PROMETHEUS_TYPE)

    mount_webui(app)  # the chat page at /
    describe(app, state.model_name, engine.session_len, engine.vocab_size)

    call_hook("register_routes", app=app)
    app.add_middleware(_CountRequests, state=state)
    guarded = (frozenset() if public_docs else DOCS_PATHS) | (
        frozenset() if public_metrics else {"/metrics"}
    )
    app.add_middleware(GuardPaths, keys=state.api_keys, paths=guarded)
    if allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=allow_origins,
            allow_credentials=allow_credentials,
            allow_methods=allow_methods or ["*"],
            allow_headers=allow_headers or ["*"],
        )
    app.add_middleware(LimitBody, max_bytes=int(max_body_mb * MIB))
    app.add_middleware(ContainErrors)
    return app
