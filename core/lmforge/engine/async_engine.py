"""The front end every caller uses: prompts in, streamed :class:`GenOut` increments out.

``AsyncEngine.generate`` is an async generator for the server; ``start`` is its thread-safe,
callback-based core that the synchronous ``pipeline()`` uses too. Both turn a prompt (text,
OpenAI messages or token ids) into a :class:`Request`, compile its ``response_format`` into a
grammar (in a worker thread for ``generate``: never on the engine loop), hand it to the
:class:`EngineLoop`, and keep interactive sessions: a session's token history, whose K/V the
prefix cache keeps, so a continued turn does not prefill its past again.

Prompts are checked before they cost anything: token ids must lie in the vocabulary, and a text
too long for the session by a cheap bound (characters against the longest token) is refused
before it is tokenized. ``generate`` renders and tokenizes in a worker thread, so a long prompt
never holds up the server's event loop. Message contents are tokenized as text: the spelling of a
control token inside one never becomes that token (see :mod:`lmforge.chat_template.guard`)
unless ``special_tokens_in_messages`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cached_property
from typing import Any

from ..chat_template.base import content_text
from ..chat_template.guard import ContentGuard
from ..errors import ConfigError, PromptTooLongError
from ..messages import GenerationConfig
from ..structured import grammar_from_response_format
from .inbox import Inbox
from .outputs import GenOut
from .request import Request

logger = logging.getLogger(__name__)

Prompt = str | list[int] | list[dict]

# Unicode normalization (NFC, say) can merge a few characters into one before tokenizing, so the
# cheap bound on a text's length allows this many characters per token beyond the longest one.
NORMALIZATION_SLACK = 4


class AsyncEngine:
    def __init__(self, loop, tokenizer, chat_template, model_name: str, session_len: int,
                 engine_config, match_prefixes: bool = False,
                 special_tokens_in_messages: bool = False, grammar_compiler=None):
        self.loop = loop
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.model_name = model_name
        self.session_len = session_len
        self.engine_config = engine_config
        # The user's enable_prefix_caching: every request may reuse cached prefixes. Without it
        # only a session's own continued turns do (its history stays cached either way).
        self.match_prefixes = match_prefixes
        #: Let message contents spell control tokens (unsafe with untrusted users).
        self.special_tokens_in_messages = special_tokens_in_messages
        # structured.compiler.GrammarCompiler; None for an engine without structured output.
        self.grammar_compiler = grammar_compiler
        self._sessions: dict[int, list[int]] = {}
        self._busy: dict[int, int] = {}  # session id -> id of the request running in it
        self._lock = threading.Lock()
        self._encoder = ThreadPoolExecutor(2, thread_name_prefix="lmforge-tokenize")
        self._inbox: Inbox | None = None  # of the event loop generate last ran on

    @property
    def vocab_size(self) -> int:
        """Token ids run from 0 to ``vocab_size - 1``."""
        return self.loop.vocab_size

    @cached_property
    def _guard(self) -> ContentGuard:
        return ContentGuard(self.tokenizer.special_texts)

    # ------------------------------------------------------------------ prompts

    def encode_prompt(self, prompt: Prompt, do_preprocess: bool = True,
                      sequence_start: bool = True, tools: list | None = None) -> list[int]:
        """Token ids of a prompt: ids pass through; text and messages go through the template
        (with ``tools``, OpenAI's tool list, offered to the model).

        Raises :class:`ConfigError` for an id outside the vocabulary and
        :class:`PromptTooLongError` for a text that cannot fit the session.
        """
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt) and prompt:
            ids = list(prompt)
        elif isinstance(prompt, list):
            self._check_text_length(sum(len(content_text(m.get("content"))) for m in prompt
                                        if isinstance(m, dict)))
            swaps = self._swaps()
            text = self.chat_template.messages2prompt(swaps.messages(prompt),
                                                      sequence_start=sequence_start, tools=tools)
            ids = self.tokenizer.encode_pieces(swaps.pieces(text), add_bos=sequence_start)
        elif isinstance(prompt, str):
            self._check_text_length(len(prompt))
            if do_preprocess:
                swaps = self._swaps()
                text = self.chat_template.get_prompt(swaps.text(prompt),
                                                     sequence_start=sequence_start)
                ids = self.tokenizer.encode_pieces(swaps.pieces(text), add_bos=sequence_start)
            else:  # a raw prompt is the caller's own text, control tokens included
                ids = self.tokenizer.encode(prompt, add_bos=sequence_start)
        else:
            raise TypeError(f"A prompt must be text, messages or token ids, not {type(prompt).__name__}.")
        self._check_ids(ids)
        return ids

    def _swaps(self):
        guard = ContentGuard(()) if self.special_tokens_in_messages else self._guard
        return guard.swaps()

    def _check_text_length(self, chars: int) -> None:
        most = self.session_len * self.tokenizer.max_token_chars * NORMALIZATION_SLACK
        if chars > most:
            raise PromptTooLongError(
                f"The prompt has {chars} characters, more than a session of {self.session_len} "
                "tokens can hold; shorten the prompt or raise session_len."
            )

    def _check_ids(self, ids: list[int]) -> None:
        vocab = self.vocab_size
        for i, token in enumerate(ids):
            if not 0 <= token < vocab:
                raise ConfigError(
                    f"The prompt's token id {token} (at position {i}) is not in this model's "
                    f"vocabulary; ids run from 0 to {vocab - 1}."
                )

    # ------------------------------------------------------------------ grammars

    def compile_grammar(self, gen_config: GenerationConfig) -> Any:
        """The compiled grammar of ``gen_config.response_format`` (None without one).

        Raises :class:`ConfigError` naming the part of the format the grammar library rejects.
        """
        grammar = grammar_from_response_format(gen_config.response_format)
        if grammar is None:
            return None
        if self.grammar_compiler is None:
            raise ConfigError(
                "Invalid value for response_format: this engine does not support structured "
                "output; leave response_format out."
            )
        return self.grammar_compiler.compile(grammar)

    # ------------------------------------------------------------------ requests

    def start(self, prompt: Prompt, gen_config: GenerationConfig | None, sink: Callable[[GenOut], None],
              *, session_id: int | None = None, sequence_start: bool = True,
              sequence_end: bool = True, do_preprocess: bool = True,
              adapter_name: str | None = None, tools: list | None = None) -> tuple[Request, Future]:
        """Build and submit a request; ``sink`` receives its outputs on the engine thread.

        Its ``response_format`` is compiled here, in the caller's thread. Returns the request
        and a future that resolves when the engine admitted it, or holds the reason it refused
        (a prompt that is too long, say).
        """
        gen_config = gen_config or GenerationConfig()
        gen_config.validate()
        grammar = self.compile_grammar(gen_config)
        ids = self.encode_prompt(prompt, do_preprocess, sequence_start, tools)
        return self.submit(ids, gen_config, sink, session_id=session_id,
                           sequence_start=sequence_start, sequence_end=sequence_end,
                           adapter_name=adapter_name, grammar=grammar)

    def submit(self, ids: list[int], gen_config: GenerationConfig, sink: Callable[[GenOut], None],
               *, session_id: int | None = None, sequence_start: bool = True,
               sequence_end: bool = True, adapter_name: str | None = None,
               grammar: Any = None) -> tuple[Request, Future]:
        """Submit an encoded prompt (see :meth:`start`) and its compiled grammar (see
        :meth:`compile_grammar`); a continued session turn is prefixed with the session's
        history. One request runs in a session at a time: a second one is a
        :class:`ConfigError` until the first has finished."""
        continuing = session_id is not None and not sequence_start
        with self._lock:
            if session_id is not None and session_id in self._busy:
                raise ConfigError(
                    f"Session {session_id} is already generating; wait for its reply or cancel "
                    "it first."
                )
            if continuing:
                ids = self._sessions.get(session_id, []) + ids
            request = Request(ids, gen_config, sink, adapter=adapter_name,
                              allow_prefix_match=self.match_prefixes or continuing,
                              grammar=grammar)
            if session_id is not None:
                self._busy[session_id] = request.request_id
        if session_id is not None:
            request.sink = self._session_sink(sink, session_id, request, sequence_end)
        if session_id is None:
            return request, self.loop.submit(request)

        def release_if_refused(done: Future) -> None:
            if done.cancelled() or done.exception() is not None:
                self._release(session_id, request.request_id)

        try:
            admitted = self.loop.submit(request)
        except BaseException:
            self._release(session_id, request.request_id)
            raise
        admitted.add_done_callback(release_if_refused)
        return request, admitted

    def _release(self, session_id: int, request_id: int) -> None:
        with self._lock:
            if self._busy.get(session_id) == request_id:
                del self._busy[session_id]

    def _session_sink(self, sink, session_id: int, request: Request, end: bool):
        """Record the session's history (prompt + choice 0's output) once the request ends."""
        outputs: list[int] = []
        remaining = [request.gen_config.n]

        def wrapped(out: GenOut) -> None:
            if out.index == 0:
                outputs.extend(out.token_ids)
            if out.finish_reason is not None:
                remaining[0] -= 1
                if remaining[0] == 0:
                    with self._lock:
                        if end or out.finish_reason in ("abort", "error"):
                            self._sessions.pop(session_id, None)
                        else:
                            self._sessions[session_id] = request.prompt_ids + outputs
                    self._release(session_id, request.request_id)
            sink(out)

        return wrapped

    async def generate(self, prompt: Prompt, gen_config: GenerationConfig | None = None, *,
                       session_id: int | None = None, sequence_start: bool = True,
                       sequence_end: bool = True, do_preprocess: bool = True,
                       adapter_name: str | None = None,
                       tools: list | None = None) -> AsyncIterator[GenOut]:
        """Stream a request's outputs. Closing the generator (or cancelling its consumer) aborts
        the request and frees its K/V blocks. The prompt (with ``tools`` offered, for messages)
        is encoded, and its grammar compiled, in a worker thread."""
        aio_loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenOut] = asyncio.Queue()
        inbox = self._inbox
        if inbox is None or inbox.loop is not aio_loop:
            inbox = self._inbox = Inbox(aio_loop)

        def sink(out: GenOut) -> None:
            inbox.put(queue, out)

        gen_config = gen_config or GenerationConfig()
        gen_config.validate()
        ids = await aio_loop.run_in_executor(
            self._encoder, self.encode_prompt, prompt, do_preprocess, sequence_start, tools)
        grammar = None
        if gen_config.response_format is not None:
            grammar = await aio_loop.run_in_executor(self._encoder, self.compile_grammar,
                                                     gen_config)
        request, admitted = self.submit(
            ids, gen_config, sink, session_id=session_id, sequence_start=sequence_start,
            sequence_end=sequence_end, adapter_name=adapter_name, grammar=grammar,
        )
        remaining = request.gen_config.n
        try:
            await asyncio.wrap_future(admitted)
            while remaining:
                out = await queue.get()
                if out.finish_reason is not None:
                    remaining -= 1
                yield out
        finally:
            if remaining:
                self.loop.abort(request.request_id)
                if session_id is not None:  # the caller has let go of the session
                    self._release(session_id, request.request_id)

    def drop_session(self, session_id: int) -> None:
        """Forget a session's history; its cached blocks become reusable by others."""
        with self._lock:
            self._sessions.pop(session_id, None)

    async def end_session(self, session_id: int) -> None:
        self.drop_session(session_id)

    def has_session(self, session_id: int) -> bool:
        with self._lock:
            return session_id in self._sessions

    def history_tokens(self, session_id: int) -> int | None:
        """How many tokens of history session ``session_id`` holds; None when it holds none."""
        with self._lock:
            history = self._sessions.get(session_id)
        return None if history is None else len(history)

    # ------------------------------------------------------------------ other work

    def score(self, token_ids: list[int]) -> float:
        """Mean negative log-likelihood of a token sequence (see ``LLMEngine.score``)."""
        return self.loop.score(token_ids).result()

    def stats(self) -> dict[str, Any]:
        return self.loop.stats()

    def reset_counters(self) -> None:
        """Zero the engine's request and token counters, so that the server's start-up
        warm-up does not show in its metrics."""
        self.loop.reset_counters().result()

    def close(self) -> None:
        self._encoder.shutdown(wait=False, cancel_futures=True)
        self.loop.close()

    def __enter__(self) -> AsyncEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
