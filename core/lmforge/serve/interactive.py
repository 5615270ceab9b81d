"""``POST /v1/chat/interactive``: multi-turn chat whose history stays on the server.

With ``interactive_mode=true`` each turn sends only the new message; the engine keeps the
session's KV cache between turns (``sequence_start`` on the first turn, ``sequence_end`` never),
so a long conversation is not re-prefilled every turn. ``interactive_mode=false`` ends the
session. Streamed turns are newline-delimited JSON objects, as LMDeploy's clients expect.

A session belongs to whoever opened it: the API key, or the client's address when the server
has no keys. Two owners using the same ``session_id`` have two sessions; neither can read,
continue or cancel the other's. The engine knows each session by an unguessable id of its own,
and ids the server assigns (``session_id: -1``) are unguessable too. One turn runs in a session
at a time: the check and the claim happen together, before anything is awaited.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..engine.outputs import GenOut
from .errors import APIError
from .protocol import CancelResponse, InteractiveRequest, InteractiveResponse
from .sampling import interactive_generation_config
from .state import RequestTimer, ServerState, text_messages
from .streams import cancel_on_disconnect, close_quietly

#: Open sessions one owner may keep; opening one more ends its least recently used idle one.
MAX_SESSIONS_PER_OWNER = 256
# Assigned ids stay below 2**53, so JavaScript clients read them exactly.
_ID_LIMIT = 1 << 53


@dataclass
class Session:
    """One owner's session: the id the engine knows it by, and its running turn's cancel flag."""

    engine_id: int = field(default_factory=lambda: secrets.randbits(63))
    running: asyncio.Event | None = None


class InteractiveSessions:
    """Every owner's open sessions, by ``(owner, session_id)``, least recently used first."""

    def __init__(self, max_per_owner: int = MAX_SESSIONS_PER_OWNER) -> None:
        self.max_per_owner = max_per_owner
        self._sessions: OrderedDict[tuple[str, int], Session] = OrderedDict()

    @staticmethod
    def new_id() -> int:
        """An unguessable session id for a client that asked the server to pick one."""
        return 1 + secrets.randbelow(_ID_LIMIT - 1)

    def get(self, owner: str, session_id: int) -> Session | None:
        return self._sessions.get((owner, session_id))

    def claim(self, owner: str, session_id: int) -> tuple[Session, list[Session]]:
        """Mark the session as generating (opening it if new); 400 if it already is.

        Also returns the idle sessions closed to keep the owner within its limit.
        """
        key = (owner, session_id)
        session = self._sessions.get(key)
        if session is not None and session.running is not None:
            raise APIError(
                400,
                f"Session {session_id} is already generating; wait for it or cancel it first.",
                param="session_id",
            )
        if session is None:
            session = self._sessions[key] = Session()
        self._sessions.move_to_end(key)
        session.running = asyncio.Event()
        return session, self._evict(owner)

    def release(self, owner: str, session_id: int, keep: bool) -> Session | None:
        """End a turn; the session stays open only when ``keep``. Returns a closed session."""
        key = (owner, session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        session.running = None
        if keep:
            return None
        del self._sessions[key]
        return session

    def _evict(self, owner: str) -> list[Session]:
        mine = [key for key in self._sessions if key[0] == owner]
        evicted = []
        for key in mine[: max(0, len(mine) - self.max_per_owner)]:
            if self._sessions[key].running is None:
                evicted.append(self._sessions.pop(key))
        return evicted


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


def session_owner(state: ServerState, raw: Request) -> str:
    """Who a request's sessions belong to: its API key, or without keys its client's address."""
    if state.api_keys:
        return "key:" + raw.headers.get("authorization", "").partition(" ")[2].strip()
    return "addr:" + (raw.client.host if raw.client else "")


async def chat_interactive(
    state: ServerState, sessions: InteractiveSessions, req: InteractiveRequest, raw: Request
) -> JSONResponse | StreamingResponse:
    owner = session_owner(state, raw)
    session_id = sessions.new_id() if req.session_id < 0 else req.session_id
    if req.cancel:
        session = sessions.get(owner, session_id)
        running = session is not None and session.running is not None
        if running:
            session.running.set()
        return JSONResponse(CancelResponse(session_id=session_id, cancelled=running).model_dump())
    prompt = req.messages or req.prompt
    if not prompt and req.interactive_mode:
        raise APIError(400, "prompt must not be empty.", param="prompt")
    gen_config = interactive_generation_config(
        req, state.engine.session_len, state.engine.vocab_size
    )
    if isinstance(prompt, list):
        prompt = text_messages(prompt)
    session, evicted = sessions.claim(owner, session_id)
    try:
        for old in evicted:
            await state.engine.end_session(old.engine_id)
        if not req.interactive_mode:  # a stateless turn ends the session's history first
            await state.engine.end_session(session.engine_id)
        if not prompt:
            # An empty stateless turn only ends the session, as LMDeploy's clients expect.
            sessions.release(owner, session_id, keep=False)
            ended = _Turn(session_id, 0, asyncio.Event(), finish_reason="stop")
            return JSONResponse(ended.response("").model_dump())
        history = state.engine.history_tokens(session.engine_id)
        turn = _Turn(session_id, history or 0, session.running)
        outputs = await state.generate(
            prompt,
            gen_config,
            session_id=session.engine_id if req.interactive_mode else None,
            sequence_start=history is None,
            sequence_end=not req.interactive_mode,
            adapter_name=req.adapter_name,
        )
    except BaseException:
        sessions.release(owner, session_id, keep=True)
        raise
    steps = _run(state, sessions, owner, req, turn, outputs)
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
    owner: str,
    req: InteractiveRequest,
    turn: _Turn,
    outputs: AsyncIterator[GenOut],
) -> AsyncIterator[InteractiveResponse]:
    """Yield one response per output (text deltas when streaming, the whole text at the end)."""
    timer = RequestTimer(state.metrics)
    first = True  # the first token is sent even with no text yet: the reply has begun
    try:
        async for out in outputs:
            timer.saw(out)
            turn.text += out.text
            turn.input_tokens, turn.tokens = out.input_token_len, out.generate_token_len
            turn.finish_reason = out.finish_reason
            if turn.cancelled.is_set():
                turn.finish_reason = "abort"
                break
            if req.stream and (out.text or out.finish_reason or first):
                yield turn.response(out.text)
            first = False
        if turn.finish_reason == "abort" and req.stream:
            yield turn.response("")
        if not req.stream:
            yield turn.response(turn.text)
    finally:
        await close_quietly(outputs)
        timer.finish()
        # The engine keeps a session's history only after a turn that ended normally.
        kept = req.interactive_mode and turn.finish_reason in ("stop", "length")
        closed = sessions.release(owner, turn.session_id, keep=kept)
        if closed is not None:
            await state.engine.end_session(closed.engine_id)
