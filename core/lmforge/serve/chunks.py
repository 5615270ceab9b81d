"""Streamed response chunks as JSON text, from a head and a tail computed once per response.

The chunks of one streamed response differ only in their choice. Building each one through the
pydantic response models (two or three models, then ``model_dump_json``) was a tenth of the
server's CPU per streamed token; here a chunk is one string format around the choice's fields.
The text is byte for byte what ``model_dump_json`` writes (strings are escaped by the same
serializer); chunks with logprobs or tool calls still go through the models.
"""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_core import to_json

from .protocol import ChatCompletionChunk, CompletionResponse


def _json(value: str | None) -> str:
    return to_json(value).decode()


def _around_choices(empty: BaseModel) -> tuple[str, str]:
    """The JSON of a response with no choices, split where its choices go. A string value
    cannot hold the key's unescaped quotes, so the first match is the key."""
    head, _, tail = empty.model_dump_json().partition('"choices":[]')
    return head + '"choices":[', "]" + tail


class CompletionChunks:
    """The chunks of one streamed ``/v1/completions`` response."""

    def __init__(self, chunk_id: str, created: int, model: str) -> None:
        self.head, self.tail = _around_choices(
            CompletionResponse(id=chunk_id, created=created, model=model, choices=[]))

    def text(self, index: int, text: str, finish_reason: str | None) -> str:
        """A chunk of choice ``index``'s text, without logprobs."""
        return (f'{self.head}{{"index":{index},"text":{_json(text)},"logprobs":null,'
                f'"finish_reason":{_json(finish_reason)}}}{self.tail}')


class ChatChunks:
    """The chunks of one streamed ``/v1/chat/completions`` response."""

    def __init__(self, chunk_id: str, created: int, model: str) -> None:
        self.head, self.tail = _around_choices(
            ChatCompletionChunk(id=chunk_id, created=created, model=model, choices=[]))

    def content(self, index: int, content: str | None, finish_reason: str | None) -> str:
        """A chunk of choice ``index``'s content, without logprobs or tool calls."""
        return (f'{self.head}{{"index":{index},"delta":{{"role":null,"content":{_json(content)},'
                f'"tool_calls":null}},"logprobs":null,"finish_reason":{_json(finish_reason)}}}'
                f'{self.tail}')
