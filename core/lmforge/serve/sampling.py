"""Translate OpenAI request fields into the engine's :class:`GenerationConfig`.

OpenAI's defaults differ from LMDeploy's: ``temperature`` defaults to 1.0 and ``top_k`` is not an
OpenAI field at all, so unless a request names ``top_k`` the server samples without a top-k limit
(``top_k=0``) instead of the engine's greedy default (``top_k=1``).
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


def _from_sampling_fields(
    req: SamplingFields, max_new_tokens: int, logprobs: int | None
) -> GenerationConfig:
    return GenerationConfig(
        n=req.n,
        max_new_tokens=max_new_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=0 if req.top_k is None else req.top_k,
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


def chat_generation_config(req: ChatCompletionRequest, session_len: int) -> GenerationConfig:
    """Sampling for a chat request; without a token limit it may run up to the session length."""
    limit = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    return _from_sampling_fields(req, session_len if limit is None else limit, logprobs)


def completion_generation_config(req: CompletionRequest, session_len: int) -> GenerationConfig:
    """Sampling for a text completion request (OpenAI's default limit there is 16 tokens)."""
    limit = session_len if req.max_tokens is None else req.max_tokens
    return _from_sampling_fields(req, limit, req.logprobs)


def interactive_generation_config(req: InteractiveRequest, session_len: int) -> GenerationConfig:
    """Sampling for an interactive turn, with LMDeploy's defaults for that endpoint."""
    limit = req.request_output_len if req.request_output_len is not None else req.max_tokens
    return GenerationConfig(
        max_new_tokens=session_len if limit is None else limit,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        repetition_penalty=req.repetition_penalty,
        random_seed=req.seed,
        stop_words=_stop_words(req.stop),
        ignore_eos=req.ignore_eos,
        skip_special_tokens=req.skip_special_tokens,
    )
