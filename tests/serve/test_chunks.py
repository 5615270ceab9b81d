"""Streamed chunks built from a precomputed head and tail are byte for byte the models' JSON."""

from __future__ import annotations

import pytest
from lmforge.serve.chunks import ChatChunks, CompletionChunks
from lmforge.serve.protocol import (
    ChatChunkChoice,
    ChatCompletionChunk,
    CompletionChoice,
    CompletionResponse,
    DeltaMessage,
)

TEXTS = ["", "Hello", ' "quoted" \\ back', "line\nbreak\ttab\r", "\x00\x1f\x7f", "é中文🙂",
         "\u2028\u2029", "</script>", '"choices":[]']
MODELS = ["tiny", 'we"ird"choices":[]', "ünï/cödé"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("finish", [None, "stop", "length"])
def test_completion_chunks_match_the_models(model, finish):
    chunks = CompletionChunks("cmpl-abc", 1700000000, model)
    for index, text in enumerate(TEXTS):
        want = CompletionResponse(
            id="cmpl-abc", created=1700000000, model=model,
            choices=[CompletionChoice(index=index, text=text, finish_reason=finish)],
        ).model_dump_json()
        assert chunks.text(index, text, finish) == want


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("finish", [None, "stop", "length"])
def test_chat_chunks_match_the_models(model, finish):
    chunks = ChatChunks("chatcmpl-abc", 1700000000, model)
    for index, content in enumerate([*TEXTS, None]):
        want = ChatCompletionChunk(
            id="chatcmpl-abc", created=1700000000, model=model,
            choices=[ChatChunkChoice(index=index, delta=DeltaMessage(content=content),
                                     finish_reason=finish)],
        ).model_dump_json()
        assert chunks.content(index, content, finish) == want
