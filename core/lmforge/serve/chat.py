"""``POST /v1/chat/completions``: one engine request, ``n`` choices, streamed or whole; with
``tools``, each choice's reply is read for tool calls (see ``tool_calls``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..engine.outputs import GenOut
from .chunks import ChatChunks
from .logprobs import chat_logprobs
from .protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatLogprobs,
    ChatMessage,
    DeltaMessage,
    UsageInfo,
    now,
    random_id,
)
from .sampling import chat_generation_config
from .state import RequestTimer, ServerState, text_messages
from .streams import cancel_on_disconnect, close_quietly
from .tool_calls import ToolUse, tool_call_deltas, tool_call_messages

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(payload: str) -> str:
    return f"data: {payload}\n\n"


async def create_chat_completion(
    state: ServerState, req: ChatCompletionRequest, raw: Request
) -> JSONResponse | StreamingResponse:
    state.check_model(req.model)
    engine = state.engine
    gen_config = chat_generation_config(req, engine.session_len, engine.vocab_size)
    tools = ToolUse.of(req, engine.chat_template)
    extra = {}
    if tools is not None:
        await tools.configure(gen_config, engine)
        if tools.rendered_tools:
            extra["tools"] = tools.rendered_tools
    timer = RequestTimer(state.metrics)
    # req.session_id is not passed on: a chat completion has no history to keep, and an id
    # given here must not touch an interactive session of the same number.
    outputs = await state.generate(text_messages(req.messages), gen_config, **extra)
    top_n = (req.top_logprobs or 0) if req.logprobs else None
    if req.stream:
        return StreamingResponse(
            _stream(state, req, outputs, top_n, timer, tools),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    response = await cancel_on_disconnect(raw, _collect(state, req, outputs, top_n, timer, tools))
    return JSONResponse(response.model_dump())


def _logprobs(state: ServerState, out: GenOut, top_n: int | None) -> ChatLogprobs | None:
    if top_n is None or out.logprobs is None:
        return None
    return chat_logprobs(state.engine.tokenizer, out.token_ids, out.logprobs, top_n)


async def _collect(
    state: ServerState,
    req: ChatCompletionRequest,
    outputs: AsyncIterator[GenOut],
    top_n: int | None,
    timer: RequestTimer,
    tools: ToolUse | None,
) -> ChatCompletionResponse:
    texts = [""] * req.n
    logprobs = [ChatLogprobs(content=[]) if top_n is not None else None for _ in range(req.n)]
    finish: list[str | None] = [None] * req.n
    generated = [0] * req.n
    prompt_tokens = 0
    try:
        async for out in outputs:
            timer.saw(out)
            i = out.index
            texts[i] += out.text
            generated[i] = out.generate_token_len
            prompt_tokens = out.input_token_len
            piece = _logprobs(state, out, top_n)
            if piece is not None:
                logprobs[i].content += piece.content
            if out.finish_reason is not None:
                finish[i] = out.finish_reason
    finally:
        await close_quietly(outputs)
        timer.finish()
    usage = UsageInfo()
    usage.add(prompt_tokens, sum(generated))
    choices = []
    for i in range(req.n):
        message = ChatMessage(content=texts[i])
        parser = tools.parser() if tools is not None else None
        if parser is not None:
            parser.feed(texts[i])
            message.content, calls = tool_call_messages(parser)
            message.tool_calls = calls or None
            finish[i] = tools.finish_reason(finish[i], bool(calls))
        choices.append(ChatChoice(index=i, message=message, logprobs=logprobs[i],
                                  finish_reason=finish[i]))
    return ChatCompletionResponse(model=req.model, choices=choices, usage=usage)


async def _stream(
    state: ServerState,
    req: ChatCompletionRequest,
    outputs: AsyncIterator[GenOut],
    top_n: int | None,
    timer: RequestTimer,
    tools: ToolUse | None,
) -> AsyncIterator[str]:
    chunk_id, created = random_id("chatcmpl"), now()
    chunks = ChatChunks(chunk_id, created, req.model)

    def chunk(choices: list[ChatChunkChoice], usage: UsageInfo | None = None) -> str:
        body = ChatCompletionChunk(
            id=chunk_id, created=created, model=req.model, choices=choices, usage=usage
        )
        return sse(body.model_dump_json())

    generated = [0] * req.n
    prompt_tokens = 0
    parsers = [tools.parser() if tools is not None else None for _ in range(req.n)]
    started = [False] * req.n
    try:
        async for out in outputs:
            timer.saw(out)
            generated[out.index] = out.generate_token_len
            prompt_tokens = out.input_token_len
            if not started[out.index]:
                # As OpenAI does, a choice opens with the role and empty content, sent with its
                # first token even when that token has no text yet.
                started[out.index] = True
                yield chunk([ChatChunkChoice(
                    index=out.index, delta=DeltaMessage(role="assistant", content=""))])
            if not out.text and out.finish_reason is None and out.logprobs is None:
                continue
            content, calls, finish = out.text, None, out.finish_reason
            parser = parsers[out.index]
            if parser is not None:
                content, deltas = parser.feed(out.text)
                if finish is not None:
                    more, last = parser.finish()
                    content, deltas = content + more, deltas + last
                    finish = tools.finish_reason(finish, bool(parser.calls))
                calls = tool_call_deltas(deltas)
                if not (content or calls or finish or out.logprobs):
                    continue  # held back: text that may open a call
            logprobs = _logprobs(state, out, top_n)
            if logprobs is None and calls is None:
                yield sse(chunks.content(out.index, content, finish))
                continue
            choice = ChatChunkChoice(
                index=out.index,
                delta=DeltaMessage(content=content if content or not calls else None,
                                   tool_calls=calls),
                logprobs=logprobs,
                finish_reason=finish,
            )
            yield chunk([choice])
        if req.include_usage:
            usage = UsageInfo()
            usage.add(prompt_tokens, sum(generated))
            yield chunk([], usage)
        yield sse("[DONE]")
    finally:
        await close_quietly(outputs)
        timer.finish()
