"""Forwarding one OpenAI request to a node, streaming included, with fail-over.

A request whose node cannot be reached, or drops the connection before sending a byte, is sent
again to another live node serving the model: nothing reached the client yet, so the retry is
invisible to it. Once bytes have been streamed the request cannot move; the stream then ends
with an error event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .nodes import NodeManager

logger = logging.getLogger(__name__)

# Request headers a node needs to see: its API key and the body type.
_FORWARDED_REQUEST_HEADERS = ("authorization", "content-type", "accept")


def openai_error(
    status_code: int, message: str, code: str, param: str | None = None
) -> JSONResponse:
    """An error response shaped like OpenAI's: ``{"error": {message, type, param, code}}``."""
    kind = "invalid_request_error" if status_code < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status_code)


def _sse_error(message: str) -> bytes:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": 502}}
    return f"data: {json.dumps(body)}\n\n".encode()


async def _relay(
    first: bytes,
    chunks: AsyncIterator[bytes],
    stack: AsyncExitStack,
    manager: NodeManager,
    url: str,
    is_sse: bool,
) -> AsyncIterator[bytes]:
    # The exit stack owns the upstream response and the node's load/latency tracking.
    async with stack:
        if first:
            yield first
        try:
            async for chunk in chunks:
                yield chunk
        except httpx.TransportError as exc:
            manager.mark_dead(url)
            logger.warning("node %s failed mid-response: %r", url, exc)
            if is_sse:
                yield _sse_error(f"The node serving this request failed: {exc!r}")
            return


async def _send(
    manager: NodeManager, url: str, path: str, body: bytes, headers: dict
) -> StreamingResponse:
    """Send to one node and read its first bytes; raises httpx.TransportError if it fails
    before any byte."""
    stack = AsyncExitStack()
    try:
        await stack.enter_async_context(manager.track(url))
        request = manager.client.build_request(
            "POST", f"{url}{path}", content=body, headers=headers
        )
        resp = await manager.client.send(request, stream=True)
        stack.push_async_callback(resp.aclose)
        chunks = resp.aiter_bytes()
        first = await anext(chunks, b"")
    except BaseException:
        await stack.aclose()
        raise
    content_type = resp.headers.get("content-type", "application/json")
    stream = _relay(
        first, chunks, stack, manager, url, content_type.startswith("text/event-stream")
    )
    return StreamingResponse(stream, status_code=resp.status_code, media_type=content_type)


async def forward(manager: NodeManager, path: str, body: bytes, headers) -> Response:
    """Route a POST to ``path`` by the ``model`` of its JSON body and relay the node's answer."""
    try:
        payload = json.loads(body)
    except ValueError:
        return openai_error(400, "The request body is not valid JSON.", "invalid_json")
    model = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(model, str) or not model:
        return openai_error(
            400,
            "The request has no model: set 'model' to one /v1/models lists.",
            "missing_model",
            "model",
        )
    sent = {k: v for k, v in headers.items() if k.lower() in _FORWARDED_REQUEST_HEADERS}
    tried: list[str] = []
    while True:
        url = manager.pick(model, exclude=tried)
        tried.append(url)
        try:
            return await _send(manager, url, path, body, sent)
        except httpx.TransportError as exc:
            manager.mark_dead(url)
            logger.warning("node %s failed, trying another: %r", url, exc)
