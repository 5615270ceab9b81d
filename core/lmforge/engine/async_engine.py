"""The front end every caller uses: prompts in, streamed :class:`GenOut` increments out.

``AsyncEngine.generate`` is an async generator for the server; ``start`` is its thread-safe,
callback-based core that the synchronous ``pipeline()`` uses too. Both turn a prompt (text,
OpenAI messages or token ids) into a :class:`Request`, compile its ``response_format`` into a
grammar (in a worker thread for ``generate``: never on the engine loop), hand it to the
:class:`EngineLoop`, and keep interactive sessions: a session's token history, whose K/V the
prefix cache keeps, so a continued turn does not prefill its past again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

from ..errors import ConfigError
from ..messages import GenerationConfig
from ..structured import grammar_from_response_format
from .outputs import GenOut
from .request import Request

logger = logging.getLogger(__name__)

Prompt = str | list[int] | list[dict]


class AsyncEngine:
    def __init__(self, loop, tokenizer, chat_template, model_name: str, session_len: int,
                 engine_config, match_prefixes: bool = False, grammar_compiler=None):
        self.loop = loop
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.model_name = model_name
        self.session_len = session_len
        self.engine_config = engine_config
        # The user's enable_prefix_caching: every request may reuse cached prefixes. Without it
        # only a session's own continued turns do (its history stays cached either way).
        self.match_prefixes = match_prefixes
        # structured.compiler.GrammarCompiler; None for an engine without structured output.
        self.grammar_compiler = grammar_compiler
        self._sessions: dict[int, list[int]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ prompts

    def encode_prompt(self, prompt: Prompt, do_preprocess: bool = True,
                      sequence_start: bool = True, tools: list | None = None) -> list[int]:
        """Token ids of a prompt: ids pass through; text and messages go through the template
        (with ``tools``, OpenAI's tool list, offered to the model)."""
        if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt) and prompt:
            return list(prompt)
        if isinstance(prompt, list):
            text = self.chat_template.messages2prompt(prompt, sequence_start=sequence_start,
                                                      tools=tools)
        elif isinstance(prompt, str):
            text = (self.chat_template.get_prompt(prompt, sequence_start=sequence_start)
                    if do_preprocess else prompt)
        else:
            raise TypeError(f"A prompt must be text, messages or token ids, not {type(prompt).__name__}.")
        return self.tokenizer.encode(text, add_bos=sequence_start)

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
              adapter_name: str | None = None, grammar: Any = None,
              tools: list | None = None) -> tuple[Request, Future]:
        """Build and submit a request; ``sink`` receives its outputs on the engine thread.

        ``grammar`` is ``gen_config.response_format`` already compiled (``compile_grammar``);
        without it the format is compiled here, in the caller's thread.
        Returns the request and a future that resolves when the engine admitted it, or holds the
        reason it refused (a prompt that is too long, say).
        """
        gen_config = gen_config or GenerationConfig()
        gen_config.validate()
        if grammar is None:
            grammar = self.compile_grammar(gen_config)
        ids = self.encode_prompt(prompt, do_preprocess, sequence_start, tools)
        continuing = session_id is not None and not sequence_start
        if continuing:
            with self._lock:
                ids = self._sessions.get(session_id, []) + ids
        if session_id is not None:
            sink = self._session_sink(sink, session_id, ids, gen_config.n, sequence_end)
        request = Request(ids, gen_config, sink, adapter=adapter_name,
                          allow_prefix_match=self.match_prefixes or continuing, grammar=grammar)
        return request, self.loop.submit(request)

    def _session_sink(self, sink, session_id: int, ids: list[int], n: int, end: bool):
        """Record the session's history (prompt + choice 0's output) once the request ends."""
        outputs: list[int] = []
        remaining = [n]

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
                            self._sessions[session_id] = ids + outputs
            sink(out)

        return wrapped

    async def generate(self, prompt: Prompt, gen_config: GenerationConfig | None = None, *,
                       session_id: int | None = None, sequence_start: bool = True,
                       sequence_end: bool = True, do_preprocess: bool = True,
                       adapter_name: str | None = None,
                       tools: list | None = None) -> AsyncIterator[GenOut]:
        """Stream a request's outputs. Closing the generator (or cancelling its consumer) aborts
        the request and frees its K/V blocks. ``tools`` are rendered into a messages prompt."""
        aio_loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenOut] = asyncio.Queue()

        def sink(out: GenOut) -> None:
            aio_loop.call_soon_threadsafe(queue.put_nowait, out)

        grammar = None
        if gen_config is not None and gen_config.response_format is not None:
            grammar = await asyncio.to_thread(self.compile_grammar, gen_config)
        request, admitted = self.start(
            prompt, gen_config, sink, session_id=session_id, sequence_start=sequence_start,
            sequence_end=sequence_end, do_preprocess=do_preprocess, adapter_name=adapter_name,
            grammar=grammar, tools=tools,
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

    def drop_session(self, session_id: int) -> None:
        """Forget a session's history; its cached blocks become reusable by others."""
        with self._lock:
            self._sessions.pop(session_id, None)

    async def end_session(self, session_id: int) -> None:
        self.drop_session(session_id)

    def has_session(self, session_id: int) -> bool:
        with self._lock:
            return session_id in self._sessions

    # ------------------------------------------------------------------ other work

    def score(self, token_ids: list[int]) -> float:
        """Mean negative log-likelihood of a token sequence (see ``LLMEngine.score``)."""
        return self.loop.call(lambda engine: engine.score(token_ids)).result()

    def stats(self) -> dict[str, Any]:
        return self.loop.engine.stats()

    def close(self) -> None:
        self.loop.close()

    def __enter__(self) -> AsyncEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

