"""A request: one prompt, its ``n`` choices (sequences), and where their outputs go."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..messages import GenerationConfig
from .detokenizer import IncrementalDetokenizer
from .outputs import GenOut
from .sequence import Sequence

_request_ids = itertools.count()


@dataclass(eq=False)
class Request:
    """What the engine loop needs to run a request and stream its outputs.

    ``sink`` is called from the engine thread with each :class:`GenOut`; it must not block
    (the async front end hands the item to its event loop, the sync one puts it in a queue).
    ``grammar`` is the compiled grammar (``structured.compiler.CompiledGrammar``) every choice
    must follow, compiled by the front end before the request reaches the engine.
    """

    prompt_ids: list[int]
    gen_config: GenerationConfig
    sink: Callable[[GenOut], None]
    request_id: int = field(default_factory=lambda: next(_request_ids))
    adapter: str | None = None
    allow_prefix_match: bool = False
    grammar: Any = None
    seqs: list[Sequence] = field(default_factory=list)
    detoks: list[IncrementalDetokenizer] = field(default_factory=list)
    num_unfinished: int = 0
    cached_tokens: int = 0
