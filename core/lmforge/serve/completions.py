"""``POST /v1/completions``: raw text (no chat template), one engine request per prompt.

Choice ``i * n + j`` is choice ``j`` of prompt ``i``, as in OpenAI's API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..engine.outputs import GenOut
from .chat import SSE_HEADERS, sse
from .chunks import CompletionChunks
from .errors import APIError
from .logprobs import completion_logprobs, merge_completion_logprobs
from .protocol import (
    MAX_CHOICES,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    UsageInfo,
    now,
    random_id,
)
from .sampling import completion_generation_config
from .state import RequestTimer, ServerState
from .streams import cancel_on_disconnect, close_quietly, merge


def check_token_ids(ids: list[int], vocab_size: int, where: str) -> None:
    """A 400 naming the first id of ``ids`` outside ``[0, vocab_size)``."""
    for i, token in enumerate(ids):
        if not 0 <= token < vocab_size:
            raise APIError(
                400,
                f"{where}[{i}] is {token}, which is not a token id of this model; ids run from 0 "
                f"to {vocab_size - 1} (the vocabulary has {vocab_size} tokens).",
                param="prompt",
                code="invalid_value",
            )


def split_prompts(prompt: str | list, vocab_size: int, n: int = 1) -> list[str | list[int]]:
    """The request's prompts, each a string or a list of token ids inside the vocabulary.

    A request asks for at most :data:`MAX_CHOICES` choices (prompts times ``n``).
    """
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise APIError(400, "prompt must not be empty.", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        check_token_ids(prompt, vocab_size, "prompt")
        return [list(prompt)]
    if len(prompt) > MAX_CHOICES:
        raise APIError(
            400,
            f"prompt holds {len(prompt)} prompts; send at most {MAX_CHOICES} per request.",
            param="prompt",
        )
    if len(prompt) * n > MAX_CHOICES:
        raise APIError(
            400,
            f"{len(prompt)} prompts with n={n} ask for {len(prompt) * n} choices; at most "
            f"{MAX_CHOICES} per request.",
            param="n",
        )
    for i, p in enumerate(prompt):
        if isinstance(p, list):
            if not p:
                raise APIError(400, "prompt must not contain an empty token list.", param="prompt")
            check_token_ids(p, vocab_size, f"prompt[{i}]")
    return list(prompt)


async def _start_all(state: ServerState, prompts: list, gen_config) -> list[AsyncIterator[GenOut]]:
    """Start every prompt's request at once; if one is refused, abort the others."""
    started = await asyncio.gather(
        *(state.generate(p, gen_config, do_preprocess=False) for p in prompts),
        return_exceptions=True,
    )
    failed = [r for r in started if isinstance(r, BaseException)]
    if failed:
        for stream in started:
            if not isinstance(stream, BaseException):
                await close_quietly(stream)
        raise failed[0]
    return list(started)


async def create_completion(
    state: ServerState, req: CompletionRequest, raw: Request
) -> JSONResponse | StreamingResponse:
    state.check_model(req.model)
    prompts = split_prompts(req.prompt, state.engine.vocab_size, req.n)
    gen_config = completion_generation_config(
        req, state.engine.session_len, state.engine.vocab_size
    )
    timer = RequestTimer(state.metrics)
    streams = await _start_all(state, prompts, gen_config)
    if req.stream:
        return StreamingResponse(
            _stream(state, req, streams, timer), media_type="text/event-stream", headers=SSE_HEADERS
        )
    response = await cancel_on_disconnect(raw, _collect(state, req, streams, timer))
    return JSONResponse(response.model_dump())


class _Tally:
    """Per-choice text offsets, whether a choice has sent a chunk, and the request's token
    counts."""

    def __init__(self, num_prompts: int, n: int) -> None:
        self.n = n
        self.prompt_tokens = [0] * num_prompts
        self.generated = [0] * (num_prompts * n)
        self.offsets = [0] * (num_prompts * n)
        self.started = [False] * (num_prompts * n)

    def add(self, prompt_index: int, out: GenOut) -> int:
        choice = prompt_index * self.n + out.index
        self.prompt_tokens[prompt_index] = out.input_token_len
        self.generated[choice] = out.generate_token_len
        return choice

    def usage(self) -> UsageInfo:
        usage = UsageInfo()
        usage.add(sum(self.prompt_tokens), sum(self.generated))
        return usage


def _logprobs(
    state: ServerState, req: CompletionRequest, out: GenOut, offset: int
) -> CompletionLogprobs | None:
    if req.logprobs is None or out.logprobs is None:
        return None
    return completion_logprobs(
        state.engine.tokenizer, out.token_ids, out.logprobs, req.logprobs, offset
    )


async def _collect(
    state: ServerState,
    req: CompletionRequest,
    streams: list[AsyncIterator[GenOut]],
    timer: RequestTimer,
) -> CompletionResponse:
    tally = _Tally(len(streams), req.n)
    count = len(tally.generated)
    texts = [""] * count
    finish: list[str | None] = [None] * count
    logprobs = [CompletionLogprobs() if req.logprobs is not None else None for _ in range(count)]
    try:
        async for prompt_index, out in merge(streams):
            timer.saw(out)
            i = tally.add(prompt_index, out)
            piece = _logprobs(state, req, out, len(texts[i]))
            if piece is not None:
                merge_completion_logprobs(logprobs[i], piece)
            texts[i] += out.text
            finish[i] = out.finish_reason or finish[i]
    finally:
        timer.finish()
    choices = [
        CompletionChoice(index=i, text=texts[i], logprobs=logprobs[i], finish_reason=finish[i])
        for i in range(count)
    ]
    return CompletionResponse(model=req.model, choices=choices, usage=tally.usage())


async def _stream(
    state: ServerState,
    req: CompletionRequest,
    streams: list[AsyncIterator[GenOut]],
    timer: RequestTimer,
) -> AsyncIterator[str]:
    chunk_id, created = random_id("cmpl"), now()
    chunks = CompletionChunks(chunk_id, created, req.model)
    tally = _Tally(len(streams), req.n)
    try:
        async for prompt_index, out in merge(streams):
            timer.saw(out)
            i = tally.add(prompt_index, out)
            # A token with no text yet (incomplete UTF-8, an id past the tokenizer) waits for the
            # next one, except the first: the client learns at once that its reply has begun.
            if (tally.started[i] and not out.text and out.finish_reason is None
                    and out.logprobs is None):
                continue
            tally.started[i] = True
            logprobs = _logprobs(state, req, out, tally.offsets[i])
            tally.offsets[i] += len(out.text)
            if logprobs is None:
                yield sse(chunks.text(i, out.text, out.finish_reason))
                continue
            choice = CompletionChoice(
                index=i, text=out.text, logprobs=logprobs, finish_reason=out.finish_reason
            )
            body = CompletionResponse(
                id=chunk_id, created=created, model=req.model, choices=[choice]
            )
            yield sse(body.model_dump_json())
        if req.include_usage:
            body = CompletionResponse(
                id=chunk_id, created=created, model=req.model, choices=[], usage=tally.usage()
            )
            yield sse(body.model_dump_json())
        yield sse("[DONE]")
    finally:
        timer.finish()
