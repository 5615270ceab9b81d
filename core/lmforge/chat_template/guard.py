"""Message contents are text, never control tokens.

A chat template writes a conversation's turns between control tokens (``<|im_start|>``,
``<|im_end|>``...). If a message's content spelled one of them and the rendered prompt were
tokenized whole, the user's text would become a real control token and could close its own turn
and open a forged system turn. A :class:`ContentGuard` prevents that: before rendering, each
spelling of a special token inside a content is swapped for a placeholder that no text contains;
after rendering, the prompt is tokenized in pieces, the template's own text with its control
tokens and each placeholder as the plain characters it stands for. Contents without such
spellings are tokenized exactly as before.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .base import content_text

# Private-use characters around digits: templates keep them as they are (``tojson``, ``trim``,
# ``upper`` included), and no content can guess the per-prompt number between them.
_OPEN, _CLOSE = "\ue000", "\ue001"


class ContentGuard:
    """Keeps the spellings of ``special_texts`` inside message contents plain text."""

    def __init__(self, special_texts: Iterable[str]) -> None:
        texts = sorted(set(special_texts), key=len, reverse=True)  # the longest spelling wins
        self.pattern = re.compile("|".join(map(re.escape, texts))) if texts else None

    def swaps(self) -> Swaps:
        """The placeholders of one prompt."""
        return Swaps(self.pattern)


@dataclass
class Swaps:
    """Placeholders put into one prompt's contents, and how to tokenize the rendered prompt."""

    pattern: re.Pattern | None
    tag: str = field(default_factory=lambda: str(secrets.randbelow(10**16)))
    found: list[str] = field(default_factory=list)

    def text(self, text: str) -> str:
        """``text`` with each special spelling swapped for a placeholder."""
        if self.pattern is None:
            return text

        def swap(match: re.Match) -> str:
            self.found.append(match.group())
            return f"{_OPEN}{self.tag}:{len(self.found) - 1}{_CLOSE}"

        return self.pattern.sub(swap, text)

    def messages(self, messages: Iterable[Mapping[str, Any]]) -> list[Any]:
        """OpenAI-style messages with their contents (flattened to text) protected."""
        return [
            {**m, "content": self.text(content_text(m.get("content")))}
            if isinstance(m, Mapping) and "content" in m
            else m
            for m in messages
        ]

    def pieces(self, prompt: str) -> list[tuple[str, bool]]:
        """The rendered ``prompt`` as ``(text, parse_special)`` pieces: the template's text
        parses special tokens, each placeholder is the plain spelling it replaced."""
        if not self.found:
            return [(prompt, True)]
        placeholder = re.compile(f"{_OPEN}{self.tag}:(\\d+){_CLOSE}")
        pieces: list[tuple[str, bool]] = []
        start = 0
        for match in placeholder.finditer(prompt):
            pieces.append((prompt[start : match.start()], True))
            pieces.append((self.found[int(match.group(1))], False))
            start = match.end()
        pieces.append((prompt[start:], True))
        return pieces
