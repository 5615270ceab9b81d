"""Reading OpenAI's ``tools`` and ``tool_choice``."""

from __future__ import annotations

import pytest
from lmforge.errors import ConfigError
from lmforge.tools import ToolCall, parse_tool_choice, parse_tools

TOOLS = [
    {"type": "function", "function": {"name": "a", "description": "first",
                                      "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "b"}},
]


def test_functions_keep_the_tool_as_given():
    first, second = parse_tools(TOOLS)
    assert (first.name, first.description, first.parameters) == ("a", "first", {"type": "object"})
    assert second.parameters == {"type": "object", "properties": {}}
    assert first.tool == TOOLS[0]
    assert parse_tools(None) == []


@pytest.mark.parametrize("choice, mode, name", [
    (None, "auto", None), ("none", "none", None), ("auto", "auto", None),
    ("required", "required", None),
    ({"type": "function", "function": {"name": "b"}}, "function", "b"),
])
def test_tool_choice(choice, mode, name):
    parsed = parse_tool_choice(choice, parse_tools(TOOLS))
    assert (parsed.mode, parsed.name) == (mode, name)
    assert parsed.forced == (mode in ("required", "function"))


def test_no_tools_means_no_choice():
    assert parse_tool_choice(None, []).mode == "none"
    with pytest.raises(ConfigError, match="'auto' needs tools"):
        parse_tool_choice("auto", [])


@pytest.mark.parametrize("tools, where", [
    ("get_weather", "tools:"),
    ([{"type": "function"}], "tools[0].function:"),
    ([{"type": "function", "function": {"name": "a", "parameters": "x"}}],
     "tools[0].function.parameters:"),
    ([{"type": "function", "function": {"name": ""}}], "tools[0].function.name:"),
])
def test_malformed_tools_name_the_entry(tools, where):
    with pytest.raises(ConfigError, match=f"Invalid value for {where}".replace("[", r"\[")):
        parse_tools(tools)


def test_tool_calls_have_their_own_ids():
    call = ToolCall("a", '{"x": 1}')
    assert call.id.startswith("call_") and ToolCall("a", "{}").id != call.id
