"""Finding tool calls in replies: every format, whole and streamed in pieces of every size."""

from __future__ import annotations

import pytest
from lmforge.tools import ToolCallParser, get_format
from lmforge.tools.parser import scan_object

CASES = [
    ("hermes",
     'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
     '</tool_call>\n<tool_call>\n{"arguments": {}, "name": "now"}\n</tool_call>',
     "Let me check.", [("get_weather", '{"city": "Paris"}'), ("now", "{}")]),
    ("llama3",
     '{"name": "f", "parameters": {"a": [1, {"b": "}"}]}}; {"name": "g", "parameters": 7}',
     None, [("f", '{"a": [1, {"b": "}"}]}'), ("g", "7")]),
    ("llama3", '<|python_tag|>{"name": "f", "parameters": {"q": "x\\"y"}}', None,
     [("f", '{"q": "x\\"y"}')]),
    ("mistral", '[TOOL_CALLS] [{"name": "f", "arguments": {"x": 1}}, {"name": "g"}]', None,
     [("f", '{"x": 1}'), ("g", "{}")]),
    ("internlm2", 'Searching.<|action_start|><|plugin|>\n{"name": "search", "parameters": '
     '{"q": "cats"}}<|action_end|>', "Searching.", [("search", '{"q": "cats"}')]),
]
PLAIN = [
    ("hermes", "No tools needed: <tool is not a call."),
    ("llama3", 'The answer is {"a": 1}.'),
    ("mistral", "Plain text\n\n"),
    ("hermes", "Ends with a marker <tool_call>"),  # a marker with no call is content
]


def stream(fmt: str, text: str, size: int):
    parser = ToolCallParser(get_format(fmt))
    content, calls = "", {}
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    for piece in [*pieces, None]:
        new, deltas = parser.feed(piece) if piece is not None else parser.finish()
        content += new
        for d in deltas:
            if d.index not in calls:
                assert d.id and d.name, "a call's first piece carries its id and name"
                calls[d.index] = [d.name, ""]
            else:
                assert d.id is None and d.name is None
            calls[d.index][1] += d.arguments
    return content, [tuple(c) for _, c in sorted(calls.items())]


@pytest.mark.parametrize("fmt, text, content, calls", CASES)
def test_whole_reply(fmt, text, content, calls):
    parser = ToolCallParser(get_format(fmt))
    parser.feed(text)
    got_content, got_calls = parser.result()
    assert got_content == content
    assert [(c.name, c.arguments) for c in got_calls] == calls
    assert len({c.id for c in got_calls}) == len(calls)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize("fmt, text, content, calls", CASES)
def test_streamed_reply_adds_up_to_the_whole(fmt, text, content, calls, size):
    assert stream(fmt, text, size) == (content or "", calls)


@pytest.mark.parametrize("size", [1, 4, 1000])
@pytest.mark.parametrize("fmt, text", PLAIN)
def test_replies_without_calls_are_content(fmt, text, size):
    assert stream(fmt, text, size) == (text, [])
    parser = ToolCallParser(get_format(fmt))
    parser.feed(text)
    assert parser.result() == (text, [])


def test_a_call_cut_off_by_the_length_limit_is_not_returned():
    text = '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n<tool_call>\n{"name": "b", '
    parser = ToolCallParser(get_format("hermes"))
    parser.feed(text + '"arguments": {"x": "cu')
    content, calls = parser.result()
    assert content is None and [c.name for c in calls] == ["a"]


def test_content_waits_for_what_may_be_a_marker():
    parser = ToolCallParser(get_format("hermes"))
    assert parser.feed("Hello <tool") == ("Hello", [])
    assert parser.feed("_call>\n{") == ("", [])
    assert parser.finish()[0] == " <tool_call>\n{"


def test_scan_object_reads_members_as_they_come():
    text = '{"name": "f", "arguments": {"a": "}"'
    scan = scan_object(text, 0)
    assert scan.end is None
    assert scan.members["name"] == (9, 12)
    start, end = scan.members["arguments"]
    assert text[start:] == '{"a": "}"' and end is None
    whole = text + "}}"
    assert scan_object(whole, 0).end == len(whole)
