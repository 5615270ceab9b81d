"""Structured-output and tool fields a request can get wrong, against a real server process
around the fake engine: each is a 400 whose message names the field (or the flag to use)."""

from __future__ import annotations

import httpx
import pytest

MODEL = "fake-model"
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}


@pytest.fixture(scope="module")
def http(fake_server):
    with httpx.Client(base_url=fake_server.url, timeout=30) as c:
        yield c


def chat(http, **fields) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}
    return http.post("/v1/chat/completions", json=body)


def error_of(response: httpx.Response) -> dict:
    assert response.status_code == 400, response.text
    return response.json()["error"]


@pytest.mark.parametrize("fields, message", [
    ({"response_format": {"type": "yaml"}}, "Invalid value for response_format.type: 'yaml'"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}},
     "Invalid value for response_format.json_schema.schema: a JSON schema must be an object"),
    ({"response_format": {"type": "json_object"}, "guided_regex": "a+"},
     "Give one of response_format and guided_regex, not both."),
    ({"guided_json": "{not json"}, "Invalid value for guided_json: not valid JSON"),
])
def test_malformed_structured_output_fields(http, fields, message):
    error = error_of(chat(http, **fields))
    assert error["message"].startswith(message)
    field = next(iter(fields)) if len(fields) == 1 else "guided_regex"
    assert error["param"].startswith(field)


def test_tools_need_a_tool_call_format(http):
    error = error_of(chat(http, tools=[TOOL]))
    assert "start the server with --tool-call-parser" in error["message"]
    assert error["param"] == "tools"


@pytest.mark.parametrize("fields, param, message", [
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice.function.name", "'nope' is not one of the declared tools (get_weather)"),
    ({"tool_choice": "required"}, "tool_choice", "'required' needs tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]},
     "tools[0].function.name", "use 1 to 64 letters"),
    ({"tools": [TOOL, TOOL]}, "tools[1].function.name", "declared twice"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type", "only tools of type 'function'"),
    ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice", "'sometimes'"),
])
def test_malformed_tool_fields_name_the_entry(http, fields, param, message):
    error = error_of(chat(http, **fields))
    assert error["param"] == param and message in error["message"]


def test_tool_choice_none_needs_no_format(http):
    reply = chat(http, tools=[TOOL], tool_choice="none", max_tokens=3)
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["tool_calls"] is None
