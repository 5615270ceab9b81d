"""The request distributor's HTTP app: node management and the OpenAI routes it forwards."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request

from ...errors import ConfigError, LmforgeError
from .forward import forward, openai_error
from .nodes import NodeManager, NoNodeError, normalize_url
from .status import NodeStatus

logger = logging.getLogger(__name__)

# Generation can take minutes, so only connecting is bounded.
_CLIENT_TIMEOUT = httpx.Timeout(None, connect=5.0)
_CLIENT_LIMITS = httpx.Limits(max_connections=1024, max_keepalive_connections=256)


async def _json_body(request: Request) -> dict:
    body = await request.body()
    if not body:
        return {}
    try:
        data = await request.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def create_proxy_app(
    strategy: str = "min_expected_latency",
    nodes: Sequence[str] = (),
    health_interval: float = 5.0,
) -> FastAPI:
    """The request distributor: an OpenAI-compatible front for several api_server nodes.

    :param strategy: ``random``, ``min_expected_latency`` or ``min_observed_latency``.
    :param nodes: node URLs to add at start-up (more can be added with ``POST /nodes/add``); one
        that does not answer yet starts dead and joins when its health check passes.
    :param health_interval: seconds between two health checks of every node.
    """
    start_nodes = [normalize_url(url) for url in nodes]
    client = httpx.AsyncClient(timeout=_CLIENT_TIMEOUT, limits=_CLIENT_LIMITS)
    manager = NodeManager(client, strategy=strategy, health_interval=health_interval)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for url in start_nodes:
            try:
                await manager.add(url)
            except ConfigError as exc:
                # A node that is not up yet joins as dead; a health check revives it once it
                # answers, so nodes and proxy can start in any order.
                logger.warning("%s", exc)
                manager.nodes[url] = NodeStatus(alive=False)
        checker = asyncio.create_task(manager.run_health_checks())
        try:
            yield
        finally:
            checker.cancel()
            await client.aclose()

    app = FastAPI(title="lmforge request distributor", lifespan=lifespan)
    app.state.node_manager = manager

    @app.exception_handler(NoNodeError)
    async def _no_node(request: Request, exc: NoNodeError):
        return openai_error(exc.status_code, str(exc), exc.code, "model")

    @app.exception_handler(LmforgeError)
    async def _user_error(request: Request, exc: LmforgeError):
        return openai_error(400, str(exc), "invalid_request")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/nodes/status")
    async def nodes_status():
        """Every node with its models, load, recent latencies, declared speed and liveness."""
        return {url: status.to_dict() for url, status in manager.nodes.items()}

    @app.post("/nodes/add")
    async def nodes_add(request: Request):
        """Add a node: ``{"url": ..., "status": {"models": [...], "speed": ...}}``, status optional."""
        data = await _json_body(request)
        url = data.get("url") or request.query_params.get("node_url")
        if not url:
            return openai_error(400, 'Give the node to add as {"url": ...}.', "missing_url", "url")
        status = NodeStatus.from_dict(data["status"]) if data.get("status") else None
        added = await manager.add(url, status)
        return {"url": url, "status": added.to_dict()}

    @app.post("/nodes/remove")
    async def nodes_remove(request: Request, node_url: str | None = None):
        """Remove a node given as ``?node_url=`` or as ``{"url": ...}``."""
        url = node_url or (await _json_body(request)).get("url")
        if not url:
            return openai_error(
                400,
                'Give the node to remove as ?node_url=... or {"url": ...}.',
                "missing_url",
                "url",
            )
        manager.remove(url)
        return {"removed": url}

    @app.get("/v1/models")
    async def models():
        """The union of the models the live nodes serve."""
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "lmforge"}
            for name in manager.models()
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await forward(manager, "/v1/chat/completions", await request.body(), request.headers)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await forward(manager, "/v1/completions", await request.body(), request.headers)

    return app
