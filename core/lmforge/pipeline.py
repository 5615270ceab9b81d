"""``pipeline()``: offline batch inference, streaming, multi-turn chat and perplexity in Python."""

from __future__ import annotations

import itertools
import logging
import queue
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .engine.async_engine import AsyncEngine
from .engine.builder import build_async_engine
from .engine.outputs import GenOut
from .errors import ConfigError, EngineError
from .messages import GenerationConfig, Response

_session_ids = itertools.count(1)


@dataclass
class Session:
    """A multi-turn conversation held by :meth:`Pipeline.chat`; its history stays in the cache."""

    session_id: int
    history: list[tuple[str, str]] = field(default_factory=list)
    response: Response | None = None
    _started: bool = False

    def __repr__(self) -> str:
        return f"Session(session_id={self.session_id}, turns={len(self.history)})"


def _is_single(prompts) -> bool:
    """A single prompt is a string, a token-id list, or one message list."""
    if isinstance(prompts, str):
        return True
    if isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], dict):
        return True
    return isinstance(prompts, Sequence) and bool(prompts) and isinstance(prompts[0], int)


class Pipeline:
    """Runs prompts through an engine. Build it with :func:`pipeline`."""

    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def chat_template(self):
        return self.engine.chat_template

    # ------------------------------------------------------------------ batch inference

    def __call__(self, prompts, gen_config: GenerationConfig | list[GenerationConfig] | None = None,
                 do_preprocess: bool = True, adapter_name: str | None = None,
                 use_tqdm: bool = False):
        """Generate for one prompt (returns a Response) or a list of them (a list of Responses).

        A prompt is a string, an OpenAI-style message list, or token ids. With ``n > 1`` each
        prompt's result is a list of ``n`` Responses.
        """
        single = _is_single(prompts)
        batch = [prompts] if single else list(prompts)
        configs = self._configs(gen_config, len(batch))
        results: list[list[Response]] = [[] for _ in batch]
        progress = _progress(len(batch)) if use_tqdm else None
        for index, resp in self._run(batch, configs, do_preprocess, adapter_name):
            results[index].append(resp)
            if progress is not None and len(results[index]) == configs[index].n:
                progress.update(1)
        if progress is not None:
            progress.close()
        final = [r if len(r) > 1 else r[0] for r in results]
        return final[0] if single else final

    batch_infer = __call__

    def stream_infer(self, prompts, gen_config=None, do_preprocess: bool = True,
                     adapter_name: str | None = None) -> Iterator[Response]:
        """Yield Responses as text arrives; ``index`` says which prompt each belongs to, and
        ``text`` / ``token_ids`` hold the new part only."""
        single = _is_single(prompts)
        batch = [prompts] if single else list(prompts)
        configs = self._configs(gen_config, len(batch))
        for _, out in self._run(batch, configs, do_preprocess, adapter_name, stream=True):
            yield out

    def _configs(self, gen_config, count: int) -> list[GenerationConfig]:
        if isinstance(gen_config, list):
            if len(gen_config) != count:
                raise ValueError(
                    f"gen_config has {len(gen_config)} items but there are {count} prompts.")
            return gen_config
        return [gen_config or GenerationConfig()] * count

    def _run(self, batch, configs, do_preprocess, adapter_name, stream: bool = False,
             session_id: int | None = None, sequence_start: bool = True):
        """Submit every prompt, then yield ``(prompt_index, Response)``: the final one per choice,
        or every increment when streaming. Aborts what is left if the caller stops early."""
        outputs: queue.SimpleQueue[tuple[int, GenOut]] = queue.SimpleQueue()
        started = []
        remaining = 0
        try:
            for index, (prompt, cfg) in enumerate(zip(batch, configs, strict=True)):
                request, admitted = self.engine.start(
                    prompt, cfg, lambda out, i=index: outputs.put((i, out)),
                    session_id=session_id, sequence_start=sequence_start,
                    sequence_end=session_id is None, do_preprocess=do_preprocess,
                    adapter_name=adapter_name,
                )
                started.append((request, admitted))
                remaining += cfg.n
            # Wait for admission only once all are queued: the engine admits queued requests
            # between two steps, so they start in one batch.
            for _, admitted in started:
                admitted.result()
            acc: dict[tuple[int, int], Response] = {}
            while remaining:
                index, out = outputs.get()
                if out.finish_reason is not None:
                    remaining -= 1
                if out.finish_reason == "error":
                    raise EngineError(f"The engine failed while generating: {out.error}")
                if stream:
                    yield index, _to_response(out, index)
                    continue
                key = (index, out.index)
                resp = acc.setdefault(key, Response("", 0, out.input_token_len, index=index))
                resp.text += out.text
                resp.token_ids.extend(out.token_ids)
                resp.generate_token_len = out.generate_token_len
                if out.logprobs is not None:
                    resp.logprobs = (resp.logprobs or []) + out.logprobs
                if out.finish_reason is not None:
                    resp.finish_reason = out.finish_reason
                    yield index, resp
        finally:
            if remaining:
                for request, _ in started:
                    self.engine.loop.abort(request.request_id)

    # ------------------------------------------------------------------ chat

    def chat(self, prompt: str, session: Session | None = None,
             gen_config: GenerationConfig | None = None, stream_response: bool = False,
             do_preprocess: bool = True):
        """One turn of a multi-turn chat. Returns the Session (its ``response`` holds the reply),
        or, with ``stream_response``, an iterator of Responses that updates the session at the end.
        """
        session = session or self.new_session()
        turns = self._run([prompt], [gen_config or GenerationConfig()], do_preprocess, None,
                          stream=stream_response, session_id=session.session_id,
                          sequence_start=not session._started)
        session._started = True

        def streamed() -> Iterator[Response]:
            text = ""
            for _, out in turns:
                text += out.text
                yield out
            session.history.append((prompt, text))

        if stream_response:
            return streamed()
        for _, resp in turns:
            session.response = resp
        session.history.append((prompt, session.response.text))
        return session

    def new_session(self) -> Session:
        """An empty chat session to pass to :meth:`chat`."""
        return Session(next(_session_ids))

    def end_session(self, session: Session) -> None:
        """Forget a chat session's history and free what it kept cached."""
        self.engine.drop_session(session.session_id)

    # ------------------------------------------------------------------ perplexity

    def get_ppl(self, input_ids: str | list[int] | list[str] | list[list[int]]
                ) -> float | list[float]:
        """Mean negative log-likelihood (the loss; perplexity is its exp) of each sequence.

        A sequence is token ids (LMDeploy's argument) or text, which is tokenized as it is,
        with the BOS token the model's tokenizer adds and no chat template. One sequence gives
        one float, a list of sequences a list of floats.
        """
        if isinstance(input_ids, str) or (input_ids and isinstance(input_ids[0], int)):
            return self.engine.score(self._token_ids(input_ids))
        return [self.engine.score(self._token_ids(seq)) for seq in input_ids]

    def _token_ids(self, sequence) -> list[int]:
        if isinstance(sequence, str):
            return self.tokenizer.encode(sequence)
        if isinstance(sequence, list | tuple) and all(isinstance(t, int) for t in sequence):
            return list(sequence)
        raise ConfigError(
            f"get_ppl takes token ids (a list of ints) or text, or a list of either; got "
            f"{type(sequence).__name__}."
        )

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _to_response(out: GenOut, index: int) -> Response:
    return Response(out.text, out.generate_token_len, out.input_token_len, out.finish_reason,
                    list(out.token_ids), out.logprobs, index=index)


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="prompts", unit="prompt")


def pipeline(model_path: str | None = None, backend_config=None, chat_template_config=None,
             log_level: str | None = None, backend: str | None = None,
             model_name: str | None = None) -> Pipeline:
    """Load a model for offline inference.

    ``model_path``: an HF model folder, a GGUF file, a Hugging Face Hub id (``owner/name``,
    downloaded once; ``backend_config.revision`` and ``download_dir`` apply), or None for the
    bundled demo model.
    ``backend_config``: a :class:`PytorchEngineConfig` or :class:`TurbomindEngineConfig`.
    ``chat_template_config``: a :class:`ChatTemplateConfig` to choose or change the template.
    ``log_level``: the level of lmforge's log messages (default: as configured, else WARNING).
    """
    if log_level is not None:
        logging.getLogger("lmforge").setLevel(log_level.upper())
    engine = build_async_engine(model_path, backend=backend, backend_config=backend_config,
                                chat_template_config=chat_template_config, model_name=model_name)
    return Pipeline(engine)


class _CallableModule(types.ModuleType):
    """``lmforge.pipeline(...)`` is the function :func:`pipeline`, and ``lmforge.pipeline`` is
    also this module: once the module is imported, Python binds the name ``pipeline`` on
    ``lmforge`` to it, so the module itself forwards calls to the function (as
    ``lmforge.serve`` does)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Pipeline:
        return pipeline(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
