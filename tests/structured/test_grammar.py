"""Reading ``response_format``: every accepted shape, and errors that name the bad part."""

from __future__ import annotations

import json

import pytest
from lmforge import GenerationConfig
from lmforge.errors import ConfigError
from lmforge.structured import Grammar, grammar_from_response_format

SCHEMA = {"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "integer"}}}


def test_text_and_missing_are_unconstrained():
    assert grammar_from_response_format(None) is None
    assert grammar_from_response_format({"type": "text"}) is None


def test_json_object_is_any_object():
    grammar = grammar_from_response_format({"type": "json_object"})
    assert grammar.kind == "json_schema" and json.loads(grammar.source) == {"type": "object"}


def test_json_schema_keeps_property_order():
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}}
    grammar = grammar_from_response_format(rf)
    assert grammar.kind == "json_schema"
    assert list(json.loads(grammar.source)["properties"]) == ["b", "a"]
    assert grammar.field == "response_format.json_schema.schema"
    # The field is not part of the identity: the same schema from elsewhere shares the cache.
    assert grammar == Grammar.json_schema(SCHEMA, field="tools")


def test_regex_and_grammar():
    regex = grammar_from_response_format({"type": "regex_schema", "regex_schema": "[0-9]+"})
    assert (regex.kind, regex.source) == ("regex", "[0-9]+")
    lark = grammar_from_response_format({"type": "grammar", "grammar": 'start: "a"'})
    assert (lark.kind, lark.source) == ("grammar", 'start: "a"')


@pytest.mark.parametrize(
    "rf, named",
    [
        ("json", "response_format:"),
        ({"type": "yaml"}, "response_format.type: 'yaml'"),
        ({"type": "json_schema"}, "response_format.json_schema:"),
        ({"type": "json_schema", "json_schema": {"schema": [1]}},
         "response_format.json_schema.schema:"),
        ({"type": "regex_schema"}, "response_format.regex_schema:"),
        ({"type": "grammar", "grammar": ""}, "response_format.grammar:"),
    ],
)
def test_malformed_formats_name_the_part(rf, named):
    with pytest.raises(ConfigError, match=f"Invalid value for {named}".replace(".", r"\.")
                       .replace("'", "'").replace("(", r"\(")):
        grammar_from_response_format(rf)


def test_generation_config_checks_response_format():
    GenerationConfig(response_format={"type": "json_object"})
    with pytest.raises(ConfigError, match="response_format.type"):
        GenerationConfig(response_format={"type": "nope"})
