"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure a client can cause comes back this way, with a status that says whose fault it is:
400 for invalid values (the message names the field), 401 for a missing or wrong API key, 404 for
an unknown model or route, 500 only for bugs.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def _field(loc: tuple) -> str:
    # FastAPI prefixes body fields with "body"; OpenAI's ``param`` is the field's own path.
    parts = [str(p) for p in loc if p != "body"]
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
        message = f"Invalid value for {param}: {first.get('msg', 'invalid')}."
        return error_response(400, message, param=param, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return error_response(exc.status_code, message, _error_type(exc.status_code))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error in request")
        return error_response(500, f"Internal server error: {type(exc).__name__}.", "server_error")
