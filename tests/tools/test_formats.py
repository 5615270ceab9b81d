"""Tool formats: the grammar of a forced call admits exactly calls of the declared functions
(compiled with llguidance on SmolLM2's tokenizer), and what it admits parses back to them."""

from __future__ import annotations

import json

import pytest
import torch
from lmforge.errors import ConfigError
from lmforge.structured import Grammar
from lmforge.structured.compiler import GrammarCompiler
from lmforge.structured.masks import fill_bitmask
from lmforge.tokenizer import Tokenizer
from lmforge.tools import FORMATS, ToolCallParser, detect_format, get_format, parse_tools
from lmforge.tools.formats import lark_text

FUNCTIONS = parse_tools([
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "now"}},
])
REPLIES = {
    "hermes": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
              '\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>',
    "llama3": '{"name": "get_weather", "parameters": {"city": "Oslo"}}; '
              '{"name": "now", "parameters": {}}',
    "mistral": '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Oslo"}}, '
               '{"name": "now", "arguments": {}}]',
}


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_dir):
    return Tokenizer.from_pretrained(smollm2_tokenizer_dir)


@pytest.fixture(scope="module")
def compiler(tokenizer):
    return GrammarCompiler(tokenizer, 49152, [2])


@pytest.fixture(scope="module")
def write(tokenizer):
    pieces = tokenizer.hf.backend_tokenizer.decode_batch([[t] for t in range(49152)],
                                                         skip_special_tokens=False)

    def write(state, text: str) -> bool:
        """Write ``text`` through a grammar state with the longest allowed token each time;
        False as soon as no allowed token fits."""
        while text:
            bits = (fill_bitmask([state])[0].unsqueeze(1) >> torch.arange(32)) & 1
            allowed = bits.flatten().nonzero().flatten().tolist()
            fitting = [t for t in allowed if pieces[t] and text.startswith(pieces[t])]
            if not fitting:
                return False
            token = max(fitting, key=lambda t: len(pieces[t]))
            assert state.accept(token)
            text = text[len(pieces[token]):]
        return True

    return write


def no_special(text):
    return None


@pytest.mark.parametrize("fmt", sorted(REPLIES))
def test_call_grammar_admits_declared_calls_only(fmt, compiler, write):
    lark = get_format(fmt).call_grammar(FUNCTIONS, parallel=True, special=no_special)
    compiled = compiler.compile(Grammar("grammar", lark, "tools"))
    state = compiled.new_state()
    assert write(state, REPLIES[fmt])
    parser = ToolCallParser(get_format(fmt))
    parser.feed(REPLIES[fmt])
    _, calls = parser.result()
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"}), ("now", {})]
    # An undeclared function, or an argument outside the schema, is not admitted.
    for bad in ("get_time", "Rome"):
        text = REPLIES[fmt].replace("now" if bad == "get_time" else "Oslo", bad)
        assert not write(compiled.new_state(), text)


def test_one_call_without_parallel_calls(compiler, write):
    lark = get_format("hermes").call_grammar(FUNCTIONS[1:], parallel=False, special=no_special)
    state = compiler.compile(Grammar("grammar", lark)).new_state()
    assert write(state, '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>')
    assert state.done


def test_internlm2_markers_are_special_tokens(compiler, write):
    # SmolLM2 has no InternLM2 markers; its own <|im_start|> shows the special-token path.
    special = {"<|action_start|>": 1, "<|plugin|>": 1, "<|action_end|>": 2}.get
    lark = get_format("internlm2").call_grammar(FUNCTIONS[1:], parallel=False, special=special)
    assert lark.startswith('start: <[1]> <[1]> "\\n" fn <[2]>')
    state = compiler.compile(Grammar("grammar", lark)).new_state()
    assert write(state, '<|im_start|><|im_start|>\n{"name": "now", "parameters": {}}')
    assert lark_text("[TOOL_CALLS]", no_special) == '"[TOOL_CALLS]"'


def test_names_and_aliases():
    assert set(FORMATS) == {"hermes", "llama3", "mistral", "internlm2"}
    assert get_format("qwen").name == "hermes" and get_format("internlm").name == "internlm2"
    with pytest.raises(ConfigError, match="Unknown tool call parser 'xml'; use one of hermes"):
        get_format("xml")


@pytest.mark.parametrize("source, name", [
    ("{{ '<tool_call>' }}{% for t in tools %}", "hermes"),
    ("[TOOL_CALLS] {{ tools }}", "mistral"),
    ("<|start_header_id|>ipython<|end_header_id|>", "llama3"),
    ("<|action_start|><|plugin|>", "internlm2"),
    ("{{ messages }}", None),
])
def test_detect_format(source, name):
    assert detect_format(source) == name
