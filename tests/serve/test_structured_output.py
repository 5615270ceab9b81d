"""Structured output and tool calling through ``lmforge serve api_server`` on the demo model,
driven by the official ``openai`` client: every sampled reply (temperature 1) parses and
validates, forced tool choices always give valid calls, streamed replies add up to whole ones."""

from __future__ import annotations

import json

import openai
import pytest
from server_process import lmforge_server

jsonschema = pytest.importorskip("jsonschema")  # a dev tool, absent where only the GPU tests run

pytestmark = pytest.mark.slow

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 24},
                           "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "address", "tags"],
    "additionalProperties": False,
}
PERSON_FORMAT = {"type": "json_schema",
                 "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
WEATHER = {"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 24},
                          "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
CLOCK = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 24}},
         "required": ["timezone"]}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a timezone",
                                      "parameters": CLOCK}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": CLOCK}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from lmforge_server(
        tmp_path_factory.mktemp("structured"),
        "--tool-call-parser", "hermes",
        "--session-len", "2048",
        "--cache-max-entry-count", "128",  # a block count: keeps host memory small
    )  # fmt: skip


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(api_key="x", base_url=f"{server.url}/v1", max_retries=0)


@pytest.fixture(scope="module")
def model(client):
    return client.models.list().data[0].id


def sample(client, model, n=8, **kw):
    kw = {"messages": ASK, "temperature": 1.0, "max_tokens": 200, **kw}
    return client.chat.completions.create(model=model, n=n, **kw)


def assert_valid_calls(message, parallel=True):
    assert message.tool_calls, message
    assert parallel or len(message.tool_calls) == 1
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_json_mode_always_parses(client, model):
    reply = sample(client, model, n=6, seed=1, max_tokens=150,
                   response_format={"type": "json_object"},
                   messages=[{"role": "user", "content": "Describe a cat in JSON."}])
    for choice in reply.choices:
        if choice.finish_reason == "stop":  # a length cut can end any JSON mid-value
            assert isinstance(json.loads(choice.message.content), dict)
    assert sum(c.finish_reason == "stop" for c in reply.choices) >= 2


def test_strict_schema_always_validates(client, model):
    messages = [{"role": "user", "content": "Make up a person and answer in JSON."}]
    reply = sample(client, model, n=12, seed=1, messages=messages, response_format=PERSON_FORMAT)
    for choice in reply.choices:
        assert choice.finish_reason == "stop", choice
        jsonschema.validate(json.loads(choice.message.content), PERSON)
    assert reply.usage.completion_tokens > 12 * 10


def test_text_completions_take_response_format(client, model):
    reply = client.completions.create(model=model, prompt="A person as JSON:", n=4,
                                      temperature=1.0, max_tokens=200, seed=3,
                                      extra_body={"response_format": PERSON_FORMAT})
    for choice in reply.choices:
        jsonschema.validate(json.loads(choice.text), PERSON)
    regex = client.completions.create(model=model, prompt="Zip code:", max_tokens=10,
                                      extra_body={"guided_regex": "[0-9]{5}"})
    assert regex.choices[0].text.isdigit() and len(regex.choices[0].text) == 5


def test_required_tool_choice_always_calls_a_declared_function(client, model):
    reply = sample(client, model, n=6, seed=1, tools=TOOLS, tool_choice="required",
                   parallel_tool_calls=False)
    for choice in reply.choices:
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        assert_valid_calls(choice.message, parallel=False)
    # With parallel calls every complete call is valid, however many the model makes.
    reply = sample(client, model, seed=5, tools=TOOLS, tool_choice="required", n=2,
                   max_tokens=100)
    for choice in reply.choices:
        assert_valid_calls(choice.message)


def test_named_tool_choice_calls_that_function(client, model):
    named = {"type": "function", "function": {"name": "get_time"}}
    reply = sample(client, model, n=2, seed=7, tools=TOOLS, tool_choice=named)
    for choice in reply.choices:
        # OpenAI ends a call the request forced with "stop".
        assert choice.finish_reason == "stop"
        assert_valid_calls(choice.message, parallel=False)
        assert choice.message.tool_calls[0].function.name == "get_time"


def test_two_step_tool_conversation(client, model):
    first = client.chat.completions.create(model=model, messages=ASK, tools=TOOLS,
                                           tool_choice="required", parallel_tool_calls=False,
                                           temperature=0)
    call = first.choices[0].message.tool_calls[0]
    history = ASK + [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    second = client.chat.completions.create(model=model, messages=history, tools=TOOLS,
                                            tool_choice="none", temperature=0, max_tokens=40)
    answer = second.choices[0]
    assert answer.message.tool_calls is None and answer.message.content
    assert answer.finish_reason in ("stop", "length")


def test_streamed_json_adds_up_and_validates(client, model):
    stream = sample(client, model, n=2, seed=4, response_format=PERSON_FORMAT, stream=True,
                    stream_options={"include_usage": True})
    texts, finish, usage = ["", ""], [None, None], None
    for chunk in stream:
        if not chunk.choices:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            finish[choice.index] = choice.finish_reason or finish[choice.index]
    assert finish == ["stop", "stop"] and usage.completion_tokens > 20
    for text in texts:
        jsonschema.validate(json.loads(text), PERSON)


def test_streamed_tool_calls_arrive_as_deltas(client, model):
    stream = sample(client, model, n=2, seed=6, tools=TOOLS, tool_choice="required",
                    parallel_tool_calls=False, stream=True, logprobs=True)
    calls: dict[tuple[int, int], dict] = {}
    finish, logprobs = {}, 0
    for chunk in stream:
        for choice in chunk.choices:
            logprobs += len(choice.logprobs.content) if choice.logprobs else 0
            for piece in choice.delta.tool_calls or ():
                key = (choice.index, piece.index)
                if key not in calls:  # the first piece names the call
                    assert piece.id and piece.type == "function" and piece.function.name
                    calls[key] = {"name": piece.function.name, "arguments": ""}
                else:
                    assert piece.id is None and piece.function.name is None
                calls[key]["arguments"] += piece.function.arguments or ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert finish == {0: "tool_calls", 1: "tool_calls"} and logprobs > 10
    assert sorted(calls) == [(0, 0), (1, 0)]
    for call in calls.values():
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


def test_invalid_schema_is_a_400_naming_the_part(client, model):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "properties": {"a": {"type": "strnig"}}}}}
    with pytest.raises(openai.BadRequestError) as info:
        sample(client, model, n=1, response_format=bad)
    assert "response_format.json_schema.schema: Invalid type: strnig" in info.value.message
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"not": {}}}}]
    with pytest.raises(openai.BadRequestError) as info:
        sample(client, model, n=1, tools=tools, tool_choice="required")
    assert "tools[0].function.parameters" in info.value.message


def test_unknown_tool_choice_is_a_400(client, model):
    named = {"type": "function", "function": {"name": "get_stock_price"}}
    with pytest.raises(openai.BadRequestError) as info:
        sample(client, model, n=1, tools=TOOLS, tool_choice=named)
    assert "'get_stock_price' is not one of the declared tools (get_weather, get_time)" in (
        info.value.message)


def test_a_constraint_the_vocabulary_cannot_write_is_a_400(client, model):
    # U+51219 is F1 91 88 99 in UTF-8, and no token of SmolLM2's vocabulary has the byte F1
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=model, prompt="BE%", max_tokens=4,
                                  extra_body={"guided_regex": "BE%\U00051219"})
    assert "guided_regex: the model's vocabulary cannot write" in info.value.message
    assert "U+51219" in info.value.message
