"""Tools, past calls and tool results written into a conversation as plain text turns, for chat
templates that have no tool section of their own (the built-in ones, and Jinja templates
without one): the format says how each is written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .formats import ToolFormat


def has_tool_turns(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a conversation holds tool calls or tool results."""
    return any(isinstance(m, Mapping) and (m.get("role") == "tool" or m.get("tool_calls"))
               for m in messages)


def fold_tools(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
               fmt: ToolFormat, default_system: str | None, tool_role: bool) -> list[dict]:
    """``messages`` with only system, user, assistant (and, when ``tool_role``, tool) turns.

    The tools go into the system turn (one with ``default_system`` is added when there is
    none); a past assistant turn's ``tool_calls`` become its text; a tool result becomes a tool
    turn when the template has one, else part of a user turn (consecutive results share one).
    """
    from ..chat_template.base import content_text

    out: list[dict[str, Any]] = []
    folded_result = False  # the last turn is a user turn made of tool results
    for message in messages:
        role, content = message.get("role"), content_text(message.get("content"))
        if role == "tool" and not tool_role:
            text = fmt.result_text(content)
            if folded_result:
                out[-1]["content"] += "\n" + text
            else:
                out.append({"role": "user", "content": text})
            folded_result = True
            continue
        folded_result = False
        if role == "assistant" and message.get("tool_calls"):
            content = fmt.calls_text(content, message["tool_calls"])
        out.append({"role": role, "content": content})
    if tools:
        if out and out[0]["role"] == "system":
            out[0]["content"] = fmt.system_with_tools(out[0]["content"], tools)
        else:
            out.insert(0, {"role": "system",
                           "content": fmt.system_with_tools(default_system or "", tools)})
    return out


def jinja_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Messages for a Jinja template's own tool section: content as text, and the arguments of
    past calls as objects (the templates write them with ``tojson``)."""
    from ..chat_template.base import content_text
    from .formats import call_arguments

    out = []
    for message in messages:
        item = {**message, "content": content_text(message.get("content"))}
        if message.get("tool_calls"):
            item["tool_calls"] = [
                {**call, "type": call.get("type", "function"),
                 "function": dict(zip(("name", "arguments"), call_arguments(call), strict=True))}
                for call in message["tool_calls"]
            ]
        out.append(item)
    return out
