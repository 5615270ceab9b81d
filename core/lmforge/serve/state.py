"""What every route shares: the engine, the metrics, and the checks run before generating."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..engine.outputs import GenOut
from ..errors import LmforgeError
from .errors import APIError, config_error_to_api
from .metrics import ServerMetrics
from .protocol import MessageParam
from .streams import primed


@dataclass
class RequestTimer:
    """Measures one request's latency and time to first token for the metrics."""

    metrics: ServerMetrics
    start: float = field(default_factory=time.perf_counter)
    first_token: float | None = None

    def saw(self, out: GenOut) -> None:
        if self.first_token is None and (out.token_ids or out.text):
            self.first_token = time.perf_counter()

    def finish(self) -> None:
        ttft = None if self.first_token is None else self.first_token - self.start
        self.metrics.observe_request(time.perf_counter() - self.start, ttft)


@dataclass
class ServerState:
    """The served engine and the server's bookkeeping."""

    engine: Any
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    api_keys: frozenset[str] = frozenset()

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    def check_model(self, name: str) -> None:
        if name != self.model_name:
            raise APIError(
                404,
                f"The model {name!r} does not exist; this server serves {self.model_name!r}.",
                type="not_found_error",
                param="model",
                code="model_not_found",
            )

    async def generate(self, prompt: Any, gen_config: Any, **kwargs: Any) -> AsyncIterator[GenOut]:
        """Start a request and wait for its first output, so invalid input fails before a
        response starts; returns the request's whole output stream."""
        agen = self.engine.generate(prompt, gen_config, **kwargs)
        try:
            return await primed(agen)
        except LmforgeError as exc:
            raise config_error_to_api(exc) from exc


def text_messages(messages: list[MessageParam]) -> list[dict[str, Any]]:
    """The messages as the chat template takes them, content-part lists joined into text."""
    out = []
    for message in messages:
        content = message.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        out.append({**message.model_dump(), "content": content or ""})
    return out


def check_text(value: Any, path: str = "") -> None:
    """A 400 naming the first string in a request that is not Unicode text.

    JSON's ``\\u`` escapes can carry half of a UTF-16 surrogate pair (``"\\ud800"``), which no
    tokenizer can encode.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = value[exc.start : exc.end].encode("unicode_escape").decode()
            raise APIError(
                400,
                f"{path} holds a lone surrogate ({bad}), which is not text; send a complete "
                "surrogate pair or the character itself.",
                param=path,
                code="invalid_value",
            ) from None
    elif isinstance(value, BaseModel):
        fields = {name: getattr(value, name) for name in type(value).model_fields}
        for name, item in {**fields, **(value.model_extra or {})}.items():
            check_text(item, f"{path}.{name}" if path else name)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, path)
            check_text(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if type(item) is not int:  # token-id lists are long and need no look
                check_text(item, f"{path}.{i}")
