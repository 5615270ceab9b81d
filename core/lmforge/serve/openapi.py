"""The OpenAPI document says what the server does, so generated clients work.

Errors come back as 400 (never FastAPI's 422), 401, 404, 413 or 500 in OpenAI's error shape;
streaming routes answer server-sent events or JSON lines; ``model`` must be the served model's
name, token limits are at most the session length and token ids lie in the vocabulary. (What a
schema cannot say, a prompt too long for the session for one, is still a 400.) The API pages
(``/docs``, ``/redoc``) load their scripts from this server, not a CDN.
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


SSE_EVENT = {
    "type": "object",
    "properties": {"data": {"type": "string", "description": "A JSON chunk, or [DONE] last."}},
    "required": ["data"],
}


def streamed(media_type: str, model: type) -> dict[int | str, dict[str, Any]]:
    """Responses of a route that answers its ``response_model`` as JSON or, when asked to,
    streams: server-sent events (each event's schema) or JSON lines (each line a ``model``)."""
    if media_type == "text/event-stream":
        stream = {"schema": SSE_EVENT}
    else:
        stream = {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
    return {200: {"content": {media_type: stream}}, **ERROR_RESPONSES}


TOKEN_LIMITS = ("max_tokens", "max_completion_tokens", "request_output_len", "min_tokens")


def _bound_token_ids(schema: dict[str, Any], vocab_size: int) -> None:
    """Give every integer item of a ``prompt`` schema the vocabulary's range."""
    if schema.get("type") == "integer":
        schema.update(minimum=0, maximum=vocab_size - 1)
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key, ()):
            _bound_token_ids(option, vocab_size)
    if isinstance(schema.get("items"), dict):
        _bound_token_ids(schema["items"], vocab_size)


def _describe_model(components: dict[str, Any], model_name: str, session_len: int,
                    vocab_size: int) -> None:
    for name in ("ChatCompletionRequest", "CompletionRequest", "InteractiveRequest"):
        properties = components.get(name, {}).get("properties", {})
        if "model" in properties:
            properties["model"]["enum"] = [model_name]
        for field in TOKEN_LIMITS:
            for option in [properties.get(field, {}), *properties.get(field, {}).get("anyOf", ())]:
                if option.get("type") == "integer":
                    option["maximum"] = session_len
        if name == "CompletionRequest" and "prompt" in properties:
            _bound_token_ids(properties["prompt"], vocab_size)


def describe(app: FastAPI, model_name: str, session_len: int, vocab_size: int) -> None:
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
        _describe_model(components, model_name, session_len, vocab_size)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
