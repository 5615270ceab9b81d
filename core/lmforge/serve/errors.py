"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure a client can cause comes back this way, with a status that says whose fault it is:
400 for invalid values (the message names the field), 401 for a missing or wrong API key, 404 for
an unknown model or route, 413 for a body over the size limit, 500 only for bugs. A 500 is logged
once and answered like any other error, so the client's connection stays open; a client that
went away before its answer is no error at all (it is counted as status 499 and not logged).
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ConfigError, LmforgeError, PromptTooLongError
from .protocol import ErrorBody, ErrorResponse

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error to return to the client as it is."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type,
            param,
            code,
        )


class ClientDisconnected(Exception):
    """The client closed its connection before its response was ready."""


#: nginx's status for a request whose client closed the connection; the client never sees it.
CLIENT_CLOSED = 499


def error_response(
    status: int,
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorBody(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status)


def _error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


# Parts of a validation error's location that name a member of a union type, not a field.
_UNION_MEMBER = re.compile(r"[\[\]-]|^(str|int|float|bool|list|dict|none)$")


def _field(loc: tuple) -> str:
    # FastAPI prefixes body fields with "body"; OpenAI's ``param`` is the field's own path.
    parts = [str(p) for p in loc if p != "body" and not _UNION_MEMBER.search(str(p))]
    return ".".join(parts) or "body"


def config_error_to_api(exc: LmforgeError) -> APIError:
    """Map an engine-side user error to an HTTP error; ``param`` is the field that an
    "Invalid value for FIELD: ..." message names."""
    if isinstance(exc, PromptTooLongError):
        return APIError(400, str(exc), code="context_length_exceeded")
    if isinstance(exc, ConfigError):
        named = re.match(r"Invalid value for ([^:\s]+):", str(exc))
        return APIError(400, str(exc), param=named.group(1) if named else None)
    return APIError(500, str(exc), type="server_error")


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app can raise come back in OpenAI's shape."""

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.type, exc.param, exc.code)

    @app.exception_handler(LmforgeError)
    async def _lmforge_error(_: Request, exc: LmforgeError) -> JSONResponse:
        err = config_error_to_api(exc)
        return error_response(err.status, err.message, err.type, err.param, err.code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = tuple(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            return error_response(400, "The request body is not valid JSON.", code="invalid_json")
        param = _field(loc)
        detail = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        message = f"Invalid value for {param}: {detail}."
        return error_response(400, message, param=param, code="invalid_value")

    @app.exception_handler(ClientDisconnected)
    async def _client_gone(_: Request, exc: ClientDisconnected) -> Response:
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        code = getattr(exc, "code", None)
        return error_response(exc.status_code, message, _error_type(exc.status_code), code=code)



class ContainErrors:
    """ASGI middleware that answers an unexpected exception with a 500 in OpenAI's shape.

    Starlette's own last-resort handler re-raises after answering, and uvicorn then closes the
    connection; here the error is logged once and the connection stays usable.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            logger.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                message = f"Internal server error: {type(exc).__name__}."
                await error_response(500, message, "server_error")(scope, receive, send)
