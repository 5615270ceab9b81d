"""What guards the server against careless and hostile clients before a route runs.

- :class:`LimitBody` caps a request body's size (413), whether or not it declares its length.
- :func:`api_key_check` is the ``Authorization: Bearer <key>`` check of every protected route;
  :class:`GuardPaths` applies it to routes that are not FastAPI routes of ours (the OpenAPI
  document and its pages) and to ``/metrics``.
- :func:`exposure_warning` says when a server listens beyond this machine with no key.
"""

from __future__ import annotations

import ipaddress
import secrets

from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import APIError, error_response

MIB = 1 << 20
#: The default cap on a request body: room for a long prompt (a 128k-token context as text or
#: as token ids), small enough that reading and parsing it never holds the server up for long.
DEFAULT_MAX_BODY_MB = 4


def _missing_key() -> APIError:
    return APIError(
        401,
        "This server needs an API key: send the header 'Authorization: Bearer <key>' with a "
        "key given to its --api-keys (openai clients: api_key=<key>; lmforge serve "
        "api_client: --api-key <key>).",
        type="authentication_error",
        code="invalid_api_key",
    )


def check_api_key(keys: frozenset[str], authorization: str) -> None:
    """Raise a 401 unless ``authorization`` is ``Bearer <one of keys>`` (no keys: anyone)."""
    if not keys:
        return
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise _missing_key()
    if not any(secrets.compare_digest(token.strip(), key) for key in keys):
        raise APIError(401, "Invalid API key.", type="authentication_error", code="invalid_api_key")


def api_key_check(keys: frozenset[str]):
    """A FastAPI dependency that applies :func:`check_api_key` to a route."""

    async def check(request: Request) -> None:
        check_api_key(keys, request.headers.get("authorization", ""))

    return check


class GuardPaths:
    """ASGI middleware that asks for an API key on some exact paths."""

    def __init__(self, app: ASGIApp, keys: frozenset[str], paths: frozenset[str]) -> None:
        self.app, self.keys, self.paths = app, keys, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.keys and scope["path"] in self.paths:
            headers = dict(scope["headers"])
            try:
                check_api_key(self.keys, headers.get(b"authorization", b"").decode("latin-1"))
            except APIError as err:
                response = error_response(err.status, err.message, err.type, err.param, err.code)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyTooLarge(HTTPException):
    """A body that passed the size limit while it was read (an HTTP error, so the route's own
    body parsing lets it through as it is)."""

    code = "request_too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            413,
            f"The request body is larger than this server's limit of {max_bytes / MIB:g} MiB; "
            "send a smaller one, or start the server with a higher --max-body-mb.",
        )


class LimitBody:
    """ASGI middleware that answers 413 to a body over ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before the body is read; a body
    sent in chunks is counted as it arrives and refused once it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self):
        err = BodyTooLarge(self.max_bytes)
        return error_response(err.status_code, err.detail, code=err.code)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:  # read outside a FastAPI route, which would have answered it
            if not started:
                await self._too_large()(scope, receive, send)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, api_keys: list[str] | None) -> str | None:
    """A warning for a server that listens beyond this machine and asks for no key."""
    if api_keys or is_loopback(host):
        return None
    return (
        f"Warning: listening on {host} without --api-keys: anyone who can reach this machine "
        "can use the model. Pass --api-keys, or --server-name 127.0.0.1 to serve this machine only."
    )
