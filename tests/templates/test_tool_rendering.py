"""Tools, past tool calls and tool results in prompts: built-in templates write them in their
family's format, a Jinja template with a tool section renders them itself, and one without gets
them as text turns in the chosen format."""

from __future__ import annotations

import json

import pytest
from lmforge.chat_template import ChatTemplate, get_template
from lmforge.chat_template.jinja import JinjaChatTemplate
from lmforge.errors import ConfigError

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
CALL = {"id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
CHAT = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "sunny"},
]
TOOL_JSON = json.dumps(TOOLS[0], ensure_ascii=False)


def test_qwen_writes_hermes_calls():
    prompt = get_template("qwen").messages2prompt(CHAT, tools=TOOLS)
    assert prompt.startswith(
        "<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more"
    )
    assert f"<tools>\n{TOOL_JSON}\n</tools>" in prompt
    assert prompt.endswith(
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Paris"}}\n</tool_call><|im_end|>\n'
        # consecutive results share one user turn
        "<|im_start|>user\n<tool_response>\n21 C\n</tool_response>\n"
        "<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )


def test_llama3_1_results_come_in_ipython_turns():
    prompt = get_template("llama3_1").messages2prompt(CHAT[:3], tools=TOOLS)
    assert "Respond in the format {\"name\": function name, \"parameters\"" in prompt
    assert prompt.endswith(
        '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "get_weather", '
        '"parameters": {"city": "Paris"}}<|eot_id|>'
        "<|start_header_id|>ipython<|end_header_id|>\n\n21 C<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_internlm2_offers_tools_on_the_plugin_channel():
    prompt = get_template("internlm2").messages2prompt(CHAT[:3], tools=TOOLS)
    assert (f"<|im_end|>\n<|im_start|>system name=<|plugin|>\n"
            f"[{json.dumps(TOOLS[0]['function'])}]<|im_end|>\n") in prompt
    assert prompt.endswith(
        '<|im_start|>assistant\n<|action_start|><|plugin|>\n{"name": "get_weather", '
        '"parameters": {"city": "Paris"}}<|action_end|><|im_end|>\n'
        "<|im_start|>environment name=<|plugin|>\n21 C<|im_end|>\n<|im_start|>assistant\n"
    )


def test_a_template_without_a_tool_format_says_how_to_choose_one():
    with pytest.raises(ConfigError, match="has no tool format.*--tool-call-parser"):
        get_template("yi").messages2prompt(CHAT[:1], tools=TOOLS)
    assert get_template("yi").tool_format() is None
    assert get_template("yi").replace(tool_parser="hermes").messages2prompt(CHAT, tools=TOOLS)


# A Jinja template with a tool section of its own, in the way model repositories write them.
NATIVE = (
    "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}{% endif %}"
    "{% for m in messages %}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "CALL {{ c.function.name }} {{ c.function.arguments | tojson }}\n{% endfor %}"
    "{% elif m.role == 'tool' %}RESULT {{ m.content }}\n"
    "{% else %}{{ m.role }}: {{ m.content }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}<tool_call>"
)


def test_jinja_template_with_a_tool_section_renders_tools_itself():
    template = JinjaChatTemplate(source=NATIVE)
    assert template.tool_parser == "hermes" and template.renders_tools
    assert template.messages2prompt(CHAT, tools=TOOLS) == (
        "TOOLS:get_weather;user: Weather in Paris?\n"
        'CALL get_weather {"city": "Paris"}\nRESULT 21 C\nRESULT sunny\nassistant:<tool_call>'
    )


def test_jinja_template_without_one_gets_tools_as_text():
    plain = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    template = JinjaChatTemplate(source=plain)
    assert template.tool_format() is None
    prompt = template.replace(tool_parser="hermes").messages2prompt(CHAT, tools=TOOLS)
    assert prompt.startswith("<system># Tools\n\n")
    assert "<user><tool_response>\n21 C\n</tool_response>\n<tool_response>" in prompt


def test_tool_and_eotool_are_template_fields():
    template = ChatTemplate(user="U:", eoh="\n", assistant="A:", eoa="\n", tool="T:",
                            eotool="\n", tool_parser="llama3")
    assert template.messages2prompt(CHAT[:3]) == (
        'U:Weather in Paris?\nA:{"name": "get_weather", "parameters": {"city": "Paris"}}\n'
        "T:21 C\nA:"
    )
