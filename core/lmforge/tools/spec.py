"""The tools a request offers and how it lets the model choose among them (OpenAI's fields)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
EMPTY_PARAMETERS = {"type": "object", "properties": {}}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class Function:
    """One function tool: ``parameters`` is the JSON schema of its arguments; ``tool`` is the
    tool as the request gave it (chat templates render that)."""

    name: str
    parameters: dict[str, Any]
    description: str = ""
    tool: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class ToolChoice:
    """``auto`` (the model decides), ``none`` (no call), ``required`` (at least one call) or
    ``function`` (a call of ``name``)."""

    mode: str
    name: str | None = None

    @property
    def forced(self) -> bool:
        return self.mode in ("required", "function")


@dataclass
class ToolCall:
    """A call the model made; ``arguments`` is JSON text, as OpenAI's API returns it."""

    name: str
    arguments: str
    id: str = field(default_factory=new_call_id)


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"Invalid value for {where}: {message}")


def parse_tools(tools: Any) -> list[Function]:
    """The functions of OpenAI's ``tools`` list; :class:`ConfigError` names the bad entry."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _fail("tools", "must be a list of {\"type\": \"function\", \"function\": {...}}.")
    functions: list[Function] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, Mapping) or tool.get("type", "function") != "function":
            raise _fail(f"{where}.type", "only tools of type 'function' are supported.")
        fn = tool.get("function")
        if not isinstance(fn, Mapping):
            raise _fail(f"{where}.function", "must be an object with a 'name'.")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _fail(f"{where}.function.name",
                        f"{name!r}; use 1 to 64 letters, digits, '_', '-' or '.'.")
        if any(f.name == name for f in functions):
            raise _fail(f"{where}.function.name", f"{name!r} is declared twice.")
        parameters = fn.get("parameters", EMPTY_PARAMETERS)
        if not isinstance(parameters, Mapping):
            raise _fail(f"{where}.function.parameters", "must be a JSON schema object.")
        description = fn.get("description") or ""
        functions.append(Function(name, dict(parameters), str(description), dict(tool)))
    return functions


def parse_tool_choice(choice: Any, functions: list[Function]) -> ToolChoice:
    """OpenAI's ``tool_choice`` against the declared ``functions``; the default is ``auto``
    with tools and ``none`` without."""
    if choice is None:
        return ToolChoice("auto" if functions else "none")
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise _fail("tool_choice", f"{choice!r}; use 'none', 'auto', 'required' or "
                        "{\"type\": \"function\", \"function\": {\"name\": ...}}.")
        if choice != "none" and not functions:
            raise _fail("tool_choice",
                        f"{choice!r} needs tools; send the tools the model may call.")
        return ToolChoice(choice)
    fn = choice.get("function") if isinstance(choice, Mapping) else None
    name = fn.get("name") if isinstance(fn, Mapping) else None
    if not isinstance(name, str):
        raise _fail("tool_choice", "a named choice is {\"type\": \"function\", "
                    "\"function\": {\"name\": ...}}.")
    if all(f.name != name for f in functions):
        declared = ", ".join(f.name for f in functions) or "none"
        raise _fail("tool_choice.function.name",
                    f"{name!r} is not one of the declared tools ({declared}).")
    return ToolChoice("function", name)
