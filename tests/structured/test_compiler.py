"""Compiling grammars with llguidance: caching, rejected schemas, and what the matchers allow."""

from __future__ import annotations

import threading

import pytest
from lmforge.errors import ConfigError
from lmforge.structured import Grammar
from lmforge.structured.compiler import GrammarCompiler, short_error
from lmforge.structured.masks import fill_bitmask
from lmforge.tokenizer import Tokenizer

EOS = 2


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_dir):
    return Tokenizer.from_pretrained(smollm2_tokenizer_dir)


@pytest.fixture(scope="module")
def compiler(tokenizer):
    return GrammarCompiler(tokenizer, 49152, [EOS])


def allowed(state) -> list[int]:
    mask = fill_bitmask([state])[0]
    return [t for t in range(state.vocab_size) if (int(mask[t // 32]) >> (t % 32)) & 1]


def walk(state, tokenizer, text: str) -> None:
    """Write ``text`` through the grammar, each time with the longest allowed token that fits."""
    while text:
        pieces = {t: tokenizer.decode([t]) for t in allowed(state)}
        fitting = [t for t, piece in pieces.items() if piece and text.startswith(piece)]
        assert fitting, f"nothing allowed fits {text!r}"
        token = max(fitting, key=lambda t: len(pieces[t]))
        assert state.accept(token)
        text = text[len(pieces[token]):]


def test_schema_is_followed_to_the_end(compiler, tokenizer):
    schema = {"type": "object", "properties": {"color": {"enum": ["red", "blue"]}},
              "required": ["color"], "additionalProperties": False}
    state = compiler.compile(Grammar.json_schema(schema)).new_state()
    # Compact JSON with one space after separators; nothing but the close may follow.
    walk(state, tokenizer, '{"color": "blue')
    assert not state.done
    assert [tokenizer.decode([t]) for t in allowed(state)] == ['"}']
    walk(state, tokenizer, '"}')
    assert state.done and state.error is None


def test_states_are_independent_copies(compiler, tokenizer):
    compiled = compiler.compile(Grammar.json_schema({"type": "object"}))
    first, second = compiled.new_state(), compiled.new_state()
    walk(first, tokenizer, "{}")
    assert first.done and not second.done


def test_a_token_outside_the_grammar_is_refused(compiler, tokenizer):
    state = compiler.compile(Grammar("regex", "[0-9]{3}")).new_state()
    assert not state.accept(tokenizer.encode("hello", add_bos=False)[0])
    assert "doesn't satisfy the grammar" in state.error


def test_digits_are_ascii(compiler, tokenizer):
    state = compiler.compile(Grammar("regex", r"\d")).new_state()
    texts = {tokenizer.decode([t]) for t in allowed(state)}
    assert texts == set("0123456789")


def test_gbnf_and_lark(compiler, tokenizer):
    for source in ('root ::= "yes" | "no"', 'start: "yes" | "no"'):
        state = compiler.compile(Grammar("grammar", source)).new_state()
        walk(state, tokenizer, "no")
        assert state.done


def test_cache_returns_the_compiled_grammar(compiler):
    grammar = Grammar.json_schema({"type": "array"})
    assert compiler.compile(grammar) is compiler.compile(Grammar.json_schema({"type": "array"}))


def test_cache_is_bounded(tokenizer):
    small = GrammarCompiler(tokenizer, 49152, [EOS], cache_size=2)
    grammars = [Grammar("regex", f"a{{{n}}}") for n in range(1, 4)]
    compiled = [small.compile(g) for g in grammars]
    assert small.compile(grammars[-1]) is compiled[-1]
    assert small.compile(grammars[0]) is not compiled[0]


@pytest.mark.parametrize(
    "grammar, message",
    [
        (Grammar.json_schema({"type": "foo"}, "response_format.json_schema.schema"),
         "Invalid value for response_format.json_schema.schema: Invalid type: foo."),
        (Grammar.json_schema({"not": {"type": "string"}}, "tools[0].function.parameters"),
         'Invalid value for tools[0].function.parameters: Unimplemented keys: ["not"].'),
        (Grammar("regex", "[a-", "response_format.regex_schema"),
         "Invalid value for response_format.regex_schema: "),
        (Grammar("grammar", "start: nothing", "response_format.grammar"),
         'Invalid value for response_format.grammar: at 1(8): unknown name: "nothing".'),
    ],
)
def test_rejected_grammars_name_the_field_and_the_reason(compiler, grammar, message):
    with pytest.raises(ConfigError) as info:
        compiler.compile(grammar)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


RARE = "\U00051219"  # UTF-8 F1 91 88 99: SmolLM2's vocabulary has no token with the byte F1


@pytest.mark.parametrize(
    "grammar",
    [
        Grammar("regex", f"BE%{RARE}", "guided_regex"),
        Grammar("grammar", f'start: "a{RARE}"', "guided_grammar"),
        Grammar.json_schema({"enum": ["x", f"y{RARE}"]}, "guided_json"),
        Grammar.json_schema({"type": "object", "properties": {RARE: {"type": "integer"}}},
                            "guided_json"),
    ],
)
def test_characters_the_vocabulary_cannot_write_are_refused(compiler, grammar):
    with pytest.raises(ConfigError, match=rf"^Invalid value for {grammar.field}: the model's "
                       r"vocabulary cannot write .* \(U\+51219\)"):
        compiler.compile(grammar)


def test_rare_characters_the_vocabulary_can_write_pass(compiler, tokenizer):
    text = "x\U0001F600\u4e2d\x9f\u00f1"
    state = compiler.compile(Grammar("regex", text)).new_state()
    for token in tokenizer.encode(text, add_bos=False):
        assert state.accept(token)
    assert state.done


def test_short_error_drops_the_grammar_excerpt():
    text = 'at 1(8): unknown name: "foo"\n   1 | start: foo\n              ^\n'
    assert short_error(text) == 'at 1(8): unknown name: "foo"'


def test_compiles_from_many_threads(tokenizer):
    fresh = GrammarCompiler(tokenizer, 49152, [EOS])
    results, errors = [], []

    def work(n):
        try:
            results.append(fresh.compile(Grammar("regex", f"x{{{n % 3 + 1}}}")))
        except Exception as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({id(r) for r in results}) <= 6
