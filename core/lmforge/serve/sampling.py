"""Translate OpenAI request fields into the engine's :class:`GenerationConfig`.

OpenAI's defaults differ from LMDeploy's: ``temperature`` defaults to 1.0 and ``top_k`` is not an
OpenAI field at all, so unless a request names ``top_k`` the server samples without a top-k limit
(``top_k=0``) instead of the engine's greedy default (``top_k=1``).

Bounds that depend on the served model: a token limit above the session length is a 400 naming
its field (without a limit, generation may run to the end of the session; either way it stops
where prompt and output fill the session, with ``finish_reason: "length"``); ``min_tokens`` above
the limit is a 400; a ``top_k`` at or above the vocabulary size is no limit, as 0 is.
"""

from __future__ import annotations

import json
from typing import Any

from ..messages import GenerationConfig
from ..structured import Grammar
from .errors import APIError
from .protocol import ChatCompletionRequest, CompletionRequest, InteractiveRequest, SamplingFields

GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")


def _stop_words(stop: str | list[str] | None) -> list[str] | None:
    if stop is None:
        return None
    words = [stop] if isinstance(stop, str) else stop
    return [w for w in words if w] or None


def _token_limit(field: str, limit: int | None, session_len: int) -> int:
    """The requested token limit, or the session length when none is given."""
    if limit is None:
        return session_len
    if limit > session_len:
        raise APIError(
            400,
            f"{field} is {limit} but the session length is {session_len}; ask for at most "
            f"{session_len} tokens.",
            param=field,
            code="invalid_value",
        )
    return limit


def _top_k(top_k: int, vocab_size: int | None) -> int:
    return 0 if vocab_size is not None and top_k >= vocab_size else top_k


def _from_sampling_fields(
    req: SamplingFields, max_new_tokens: int, logprobs: int | None, vocab_size: int | None
) -> GenerationConfig:
    if req.min_tokens is not None and req.min_tokens > max_new_tokens:
        raise APIError(
            400,
            f"min_tokens ({req.min_tokens}) is above the token limit ({max_new_tokens}).",
            param="min_tokens",
            code="invalid_value",
        )
    return GenerationConfig(
        n=req.n,
        max_new_tokens=max_new_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=0 if req.top_k is None else _top_k(req.top_k, vocab_size),
        min_p=req.min_p,
        repetition_penalty=req.repetition_penalty,
        random_seed=req.seed,
        stop_words=_stop_words(req.stop),
        ignore_eos=req.ignore_eos,
        skip_special_tokens=req.skip_special_tokens,
        min_new_tokens=req.min_tokens,
        logprobs=logprobs,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        response_format=response_format(req),
    )


def response_format(req: SamplingFields) -> dict[str, Any] | Grammar | None:
    """The request's structured-output constraint: ``response_format`` or one ``guided_*``
    field, turned into a grammar that names the field it came from."""
    given = [name for name in ("response_format", *GUIDED_FIELDS)
             if getattr(req, name) is not None]
    if len(given) > 1:
        raise APIError(400, f"Give one of {' and '.join(given)}, not both.", param=given[1])
    if req.guided_json is not None:
        schema = req.guided_json
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError as exc:
                raise APIError(400, f"Invalid value for guided_json: not valid JSON ({exc}).",
                               param="guided_json") from exc
        return Grammar.json_schema(schema, "guided_json")
    if req.guided_regex is not None:
        return Grammar("regex", req.guided_regex, "guided_regex")
    if req.guided_choice is not None:
        lark = "start: " + " | ".join(json.dumps(choice) for choice in req.guided_choice)
        return Grammar("grammar", lark, "guided_choice")
    if req.guided_grammar is not None:
        return Grammar("grammar", req.guided_grammar, "guided_grammar")
    return req.response_format


def chat_generation_config(
    req: ChatCompletionRequest, session_len: int, vocab_size: int | None = None
) -> GenerationConfig:
    """Sampling for a chat request; without a token limit it may run up to the session length."""
    # Both limits are checked when both are given, though max_completion_tokens wins.
    limit = _token_limit("max_tokens", req.max_tokens, session_len)
    if req.max_completion_tokens is not None:
        limit = _token_limit("max_completion_tokens", req.max_completion_tokens, session_len)
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    return _from_sampling_fields(req, limit, logprobs, vocab_size)


def completion_generation_config(
    req: CompletionRequest, session_len: int, vocab_size: int | None = None
) -> GenerationConfig:
    """Sampling for a text completion request (OpenAI's default limit there is 16 tokens)."""
    limit = _token_limit("max_tokens", req.max_tokens, session_len)
    return _from_sampling_fields(req, limit, req.logprobs, vocab_size)


def interactive_generation_config(
    req: InteractiveRequest, session_len: int, vocab_size: int | None = None
) -> GenerationConfig:
    """Sampling for an interactive turn, with LMDeploy's defaults for that endpoint."""
    limit = _token_limit("max_tokens", req.max_tokens, session_len)
    if req.request_output_len is not None:
        limit = _token_limit("request_output_len", req.request_output_len, session_len)
    return GenerationConfig(
        max_new_tokens=limit,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=_top_k(req.top_k, vocab_size),
        min_p=req.min_p,
        repetition_penalty=req.repetition_penalty,
        random_seed=req.seed,
        stop_words=_stop_words(req.stop),
        ignore_eos=req.ignore_eos,
        skip_special_tokens=req.skip_special_tokens,
    )
