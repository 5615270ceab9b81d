"""``POST /v1/chat/interactive``: multi-turn chat whose history stays on the server.

With ``interactive_mode=true`` each turn sends only the new message; the engine keeps the
session's KV cache between turns (``sequence_start`` on the first turn, ``sequence_end`` never),
so a long conversation is not re-prefilled every turn. ``interactive_mode=false`` ends the
session. Streamed turns are newline-delimited JSON objects, as LMDeploy's clients expect.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..engine.outputs import GenOut
from .errors import APIError
from .protocol import InteractiveRequest, InteractiveResponse
from .sampling import interactive_generation_config
from .state import RequestTimer, ServerState, text_messages
from .streams import cancel_on_disconnect, close_quietly

# Ids handed out for session_id=-1 start far above the small ids clients pick themselves.
_AUTO_SESSION_BASE = 1 << 40


@dataclass
class InteractiveSessions:
    """Open sessions (their history length in tokens) and the turns running in them."""

    history: dict[int, int] = field(default_factory=dict)
    running: dict[int, asyncio.Event] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(_AUTO_SESSION_BASE))

    def new_id(self) -> int:
        return next(self._ids)


@dataclass
class _Turn:
    session_id: int
    history_tokens: int
    cancelled: asyncio.Event
    text: str = ""
    input_tokens: int = 0
    tokens: int = 0
    finish_reason: str | None = None

    def response(self, text: str) -> InteractiveResponse:
        return InteractiveResponse(
            text=text,
            tokens=self.tokens,
            input_tokens=self.input_tokens,
            history_tokens=self.history_tokens,
            session_id=self.session_id,
            finish_reason=self.finish_reason,
        )


async def chat_interactive(
    state: ServerState, sessions: InteractiveSessions, req: InteractiveRequest, raw: Request
) -> JSONResponse | StreamingResponse:
    session_id = sessions.new_id() if req.session_id < 0 else req.session_id
    if req.cancel:
        event = sessions.running.get(session_id)
        if event is not None:
            event.set()
        return JSONResponse({"session_id": session_id, "cancelled": event is not None})
    if session_id in sessions.running:
        raise APIError(
            400,
            f"Session {session_id} is already generating; wait for it or cancel it first.",
            param="session_id",
        )
    if not req.interactive_mode and session_id in sessions.history:
        del sessions.history[session_id]
        await state.engine.end_session(session_id)
    prompt = req.messages or req.prompt
    if not prompt:
        if req.interactive_mode:
            raise APIError(400, "prompt must not be empty.", param="prompt")
        # An empty stateless turn only ends the session, as LMDeploy's clients expect.
        ended = _Turn(session_id, 0, asyncio.Event(), finish_reason="stop")
        return JSONResponse(ended.response("").model_dump())
    if isinstance(prompt, list):
        prompt = text_messages(prompt)
    start = session_id not in sessions.history
    gen_config = interactive_generation_config(req, state.engine.session_len)
    turn = _Turn(session_id, sessions.history.get(session_id, 0), asyncio.Event())
    outputs = await state.generate(
        prompt,
        gen_config,
        session_id=session_id,
        sequence_start=start,
        sequence_end=not req.interactive_mode,
        adapter_name=req.adapter_name,
    )
    sessions.running[session_id] = turn.cancelled
    steps = _run(state, sessions, req, turn, outputs)
    if req.stream:
        lines = (piece.model_dump_json() + "\n" async for piece in steps)
        return StreamingResponse(lines, media_type="application/x-ndjson")
    response = await cancel_on_disconnect(raw, _last(steps))
    return JSONResponse(response.model_dump())


async def _last(steps: AsyncIterator[InteractiveResponse]) -> InteractiveResponse:
    responses = [response async for response in steps]
    return responses[-1]


async def _run(
    state: ServerState,
    sessions: InteractiveSessions,
    req: InteractiveRequest,
    turn: _Turn,
    outputs: AsyncIterator[GenOut],
) -> AsyncIterator[InteractiveResponse]:
    """Yield one response per output (text deltas when streaming, the whole text at the end)."""
    timer = RequestTimer(state.metrics)
    try:
        async for out in outputs:
            timer.saw(out)
            turn.text += out.text
            turn.input_tokens, turn.tokens = out.input_token_len, out.generate_token_len
            turn.finish_reason = out.finish_reason
            if turn.cancelled.is_set():
                turn.finish_reason = "abort"
                break
            if req.stream and (out.text or out.finish_reason):
                yield turn.response(out.text)
        if turn.finish_reason == "abort" and req.stream:
            yield turn.response("")
        if not req.stream:
            yield turn.response(turn.text)
    finally:
        await close_quietly(outputs)
        timer.finish()
        sessions.running.pop(turn.session_id, None)
        # The engine keeps a session's history only after a turn that ended normally, and its
        # input counts include that history.
        if req.interactive_mode and turn.finish_reason in ("stop", "length"):
            sessions.history[turn.session_id] = turn.input_tokens + turn.tokens
        else:
            sessions.history.pop(turn.session_id, None)
