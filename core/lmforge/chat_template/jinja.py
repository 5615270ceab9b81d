"""A chat template rendered from the tokenizer's own Jinja ``chat_template``.

It follows transformers' ``apply_chat_template`` semantics (sandboxed Jinja with
``trim_blocks``/``lstrip_blocks``, ``messages``, ``tools``, ``add_generation_prompt``,
``bos_token``, ``eos_token``, ``raise_exception``, ``strftime_now``, a ``tojson`` that keeps
non-ASCII text), so a model with a template of its own gets the prompt it was trained with. A
template with a tool section renders tools, tool calls and tool results itself; for one without,
they are written as text turns in the format of ``tool_parser``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from ..errors import ConfigError
from ..tools.formats import detect_format
from ..tools.render import has_tool_turns, jinja_messages
from .base import ChatTemplate, normalize_messages


def _raise_exception(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes HTML characters, which would change the prompt text.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


# Sentinels for rendering a follow-up turn alone; no real conversation contains them.
_PAST_USER = "\x00lmforge-past-user\x00"
_PAST_REPLY = "\x00lmforge-past-reply\x00"


@dataclass(frozen=True)
class JinjaChatTemplate(ChatTemplate):
    """Renders ``source``, a tokenizer's Jinja chat template, as transformers does."""

    name: str = "hf"
    source: str = ""
    bos_token: str = ""
    eos_token: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.stop_words and self.eos_token:
            object.__setattr__(self, "stop_words", (self.eos_token,))
        if self.tool_parser is None:
            object.__setattr__(self, "tool_parser", detect_format(self.source))

    @property
    def renders_tools(self) -> bool:
        """Whether the template has a tool section of its own (it reads ``tools``)."""
        return re.search(r"\btools\b", self.source) is not None

    @cached_property
    def _compiled(self) -> Any:
        from jinja2.exceptions import TemplateError
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        try:
            return env.from_string(self.source)
        except TemplateError as exc:
            raise ConfigError(f"The model's Jinja chat template does not parse: {exc}.") from exc

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool,
               tools: list | None = None) -> str:
        """The template's text for ``messages`` (role/content dicts)."""
        from jinja2.exceptions import TemplateError

        extra = {"tools": tools} if tools else {}
        try:
            return self._compiled.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except TemplateError as exc:
            raise ConfigError(f"The model's Jinja chat template refused the messages: {exc}.") from exc

    def get_prompt(self, prompt: str, sequence_start: bool = True) -> str:
        if self.capability in ("completion", "python"):
            return prompt
        if sequence_start:
            return self.messages2prompt([{"role": "user", "content": prompt}])
        # A follow-up turn: what the template writes after a past reply, less the stop word
        # that ended that reply (it is already in the session's history).
        past = [
            {"role": "user", "content": _PAST_USER},
            {"role": "assistant", "content": _PAST_REPLY},
            {"role": "user", "content": prompt},
        ]
        text = self.render(past, add_generation_prompt=True)
        text = text[text.index(_PAST_REPLY) + len(_PAST_REPLY):]
        for stop in self.stop_words:
            if text.startswith(stop):
                return text[len(stop):]
        return text

    def messages2prompt(self, messages: str | list[Mapping[str, Any]],
                        sequence_start: bool = True, tools: list | None = None) -> str:
        if isinstance(messages, str):
            return self.get_prompt(messages, sequence_start)
        if tools or has_tool_turns(messages):
            if self.renders_tools:
                ends_with_reply = messages and messages[-1].get("role") == "assistant"
                return self.render(jinja_messages(messages), not ends_with_reply, tools)
            messages = self._fold_tools(messages, tools, None)
        turns = normalize_messages(messages)
        if self.capability in ("completion", "python"):
            return "".join(turn.content for turn in turns)
        plain = [{"role": t.role, "content": t.content} for t in turns]
        if not turns or turns[-1].role != "assistant":
            return self.render(plain, add_generation_prompt=True)
        # Continue the final assistant message: cut the text right after its content, as
        # transformers' continue_final_message does.
        text = self.render(plain, add_generation_prompt=False)
        final = turns[-1].content.strip()
        end = text.rfind(final) if final else -1
        if end < 0:
            raise ConfigError(
                "The model's chat template rewrites the final assistant message, so it cannot be "
                "continued; end the conversation with a user message."
            )
        return text[: end + len(final)]
