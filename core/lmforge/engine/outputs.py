"""What the async engine streams back for a request."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)  # one per streamed token: slots make it smaller and quicker to build
class GenOut:
    """One streamed increment of one choice of a request.

    ``text`` and ``token_ids`` are the new part since the previous increment (the detokenizer
    holds back bytes that do not yet form whole UTF-8 characters, and text that may be the start
    of a stop word). ``finish_reason`` is set on the last increment: ``"stop"`` (EOS or a stop
    word), ``"length"`` (max_new_tokens or session_len reached), ``"abort"`` or ``"error"``.
    Counts are totals so far.
    """

    text: str
    token_ids: list[int]
    input_token_len: int
    generate_token_len: int
    finish_reason: str | None = None
    index: int = 0
    # One dict per new token, {token_id: logprob}, with the sampled token first; None unless asked.
    logprobs: list[dict[int, float]] | None = None
    error: str | None = None
    cached_token_len: int = 0
    extra: dict = field(default_factory=dict)
