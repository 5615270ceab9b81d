"""Engine log-probabilities (``{token_id: logprob}`` per token, sampled token first) in
OpenAI's chat and text-completion shapes."""

from __future__ import annotations

import math
from typing import Any

from .protocol import ChatLogprobs, ChatTokenLogprob, CompletionLogprobs, TopLogprob

#: What a log-probability of minus infinity (a probability that underflowed) is reported as:
#: JSON has no infinity, and OpenAI's API uses this value.
MIN_LOGPROB = -9999.0


def _finite(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else MIN_LOGPROB


def _top(entries: dict[int, float], n: int) -> list[tuple[int, float]]:
    ranked = sorted(entries.items(), key=lambda kv: _finite(kv[1]), reverse=True)[:n]
    return [(token_id, _finite(logprob)) for token_id, logprob in ranked]


def _sampled(entries: dict[int, float], fallback: int) -> tuple[int, float]:
    token_id = next(iter(entries), fallback)
    return token_id, _finite(entries.get(token_id, MIN_LOGPROB))


def chat_logprobs(
    tokenizer: Any, token_ids: list[int], entries: list[dict[int, float]], top_n: int
) -> ChatLogprobs:
    """``choices[].logprobs`` of a chat completion for the given new tokens."""
    content = []
    for token_id, per_token in zip(token_ids, entries, strict=False):
        sampled, logprob = _sampled(per_token, token_id)
        text = tokenizer.decode([sampled])
        top = [
            TopLogprob(token=(t := tokenizer.decode([i])), logprob=lp, bytes=list(t.encode()))
            for i, lp in _top(per_token, top_n)
        ]
        content.append(
            ChatTokenLogprob(
                token=text, logprob=logprob, bytes=list(text.encode()), top_logprobs=top
            )
        )
    return ChatLogprobs(content=content)


def completion_logprobs(
    tokenizer: Any,
    token_ids: list[int],
    entries: list[dict[int, float]],
    top_n: int,
    text_offset: int,
) -> CompletionLogprobs:
    """``choices[].logprobs`` of a text completion; offsets start at ``text_offset``."""
    out = CompletionLogprobs()
    for token_id, per_token in zip(token_ids, entries, strict=False):
        sampled, logprob = _sampled(per_token, token_id)
        text = tokenizer.decode([sampled])
        out.tokens.append(text)
        out.token_logprobs.append(logprob)
        out.top_logprobs.append({tokenizer.decode([i]): lp for i, lp in _top(per_token, top_n)})
        out.text_offset.append(text_offset)
        text_offset += len(text)
    return out


def merge_completion_logprobs(into: CompletionLogprobs, more: CompletionLogprobs) -> None:
    into.tokens += more.tokens
    into.token_logprobs += more.token_logprobs
    into.top_logprobs += more.top_logprobs
    into.text_offset += more.text_offset
