"""The OpenAPI document says what the server does, so generated clients work.

Errors come back as 400 (never FastAPI's 422), 401, 404, 413 or 500 in OpenAI's error shape;
streaming routes answer server-sent events or JSON lines; ``model`` must be the served model's
name. The API pages (``/docs``, ``/redoc``) load their scripts from this server, not a CDN.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .protocol import ErrorResponse

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "An invalid value; the message names the field."},
    401: {"model": ErrorResponse, "description": "A missing or wrong API key."},
    404: {"model": ErrorResponse, "description": "Not the served model's name."},
    413: {"model": ErrorResponse, "description": "The body is over the size limit."},
    500: {"model": ErrorResponse, "description": "A bug in the server."},
}


def streamed(media_type: str, model: type) -> dict[int | str, dict[str, Any]]:
    """Responses of a route that answers ``model`` as JSON, or a stream when asked to."""
    stream = {"schema": {"type": "string"}}
    return {200: {"model": model, "content": {media_type: stream}}, **ERROR_RESPONSES}


def describe(app: FastAPI, model_name: str) -> None:
    """Make ``app.openapi()`` describe the served model and the errors as they really are."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        for name in ("ChatCompletionRequest", "CompletionRequest"):
            model = components.get(name, {}).get("properties", {}).get("model")
            if model is not None:
                model["enum"] = [model_name]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
