"""A streamed reply's first chunk leaves with its first token, even when that token has no text
(an id past the tokenizer, or the first bytes of a multi-byte character), so a client knows at
once that its reply has begun; later empty tokens still wait for text."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from server_process import lmforge_server

TOKENIZER_VOCAB = 49152  # SmolLM2's
EXTRA_IDS = 64


@pytest.fixture(scope="module")
def silent_server(make_tiny_llama, tmp_path_factory):
    """A tiny Llama whose vocabulary runs 64 ids past its tokenizer's and whose head scores
    only those ids: every greedy token decodes to no text."""
    import torch
    from safetensors.torch import load_file, save_file

    folder: Path = make_tiny_llama("silent_llama", vocab_size=TOKENIZER_VOCAB + EXTRA_IDS,
                                   tie_word_embeddings=False)
    weights = folder / "model.safetensors"
    state = load_file(weights)
    head = state["lm_head.weight"]
    head[:TOKENIZER_VOCAB] = 0
    head[TOKENIZER_VOCAB:] = torch.randn(EXTRA_IDS, head.shape[1], generator=torch.Generator()
                                         .manual_seed(0))
    save_file(state, weights, metadata={"format": "pt"})
    yield from lmforge_server(
        tmp_path_factory.mktemp("silent_server"), str(folder), "--model-name", "silent",
        "--session-len", "256", "--cache-max-entry-count", "64", "--max-batch-size", "8")


def _events(server, path: str, body: dict) -> list[dict]:
    """The JSON chunks of a streamed reply, in order."""
    with httpx.stream("POST", f"{server.url}{path}", json={**body, "stream": True},
                      timeout=60) as reply:
        assert reply.status_code == 200, reply.read()
        lines = [line[len("data: "):] for line in reply.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_completion_opens_with_an_empty_first_token(silent_server):
    body = {"model": "silent", "prompt": "Hello there", "max_tokens": 40, "ignore_eos": True,
            "temperature": 0, "stream_options": {"include_usage": True}}
    chunks = _events(silent_server, "/v1/completions", body)
    first = chunks[0]["choices"][0]
    assert (first["text"], first["finish_reason"]) == ("", None)
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert len(choices) == 2 and choices[-1]["finish_reason"] == "length"  # the rest coalesced
    assert "".join(c["text"] for c in choices) == ""
    assert chunks[-1]["usage"]["completion_tokens"] == 40


def test_completion_first_chunk_carries_logprobs(silent_server):
    body = {"model": "silent", "prompt": "Hello there", "max_tokens": 3, "ignore_eos": True,
            "temperature": 0, "logprobs": 2}
    first = _events(silent_server, "/v1/completions", body)[0]["choices"][0]
    assert first["text"] == "" and first["finish_reason"] is None
    assert len(first["logprobs"]["tokens"]) == 1 and len(first["logprobs"]["top_logprobs"][0]) >= 1


def test_chat_opens_with_the_role_when_the_first_token_has_no_text(silent_server):
    body = {"model": "silent", "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 40, "ignore_eos": True, "temperature": 0,
            "stream_options": {"include_usage": True}}
    chunks = _events(silent_server, "/v1/chat/completions", body)
    first = chunks[0]["choices"][0]
    assert first["delta"]["role"] == "assistant" and first["delta"]["content"] == ""
    assert first["finish_reason"] is None
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert len(choices) == 2 and choices[-1]["finish_reason"] == "length"
    assert "".join(c["delta"]["content"] or "" for c in choices) == ""
    assert chunks[-1]["usage"]["completion_tokens"] == 40


def test_streamed_text_is_the_whole_reply(tiny_server):
    """With tokens that have text, the chunks still add up to the unstreamed reply, and the
    first one comes before the end."""
    body = {"model": "tiny", "prompt": "The capital of France", "max_tokens": 24,
            "ignore_eos": True, "temperature": 0, "n": 2}
    whole = httpx.post(f"{tiny_server.url}/v1/completions", json=body, timeout=60).json()
    chunks = _events(tiny_server, "/v1/completions", body)
    for index in range(2):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        assert mine[0]["finish_reason"] is None
        assert "".join(c["text"] for c in mine) == whole["choices"][index]["text"]
