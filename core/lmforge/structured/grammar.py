"""What a request's reply must match, read from its ``response_format``.

``GenerationConfig.response_format`` takes OpenAI's shapes and LMDeploy's:

- ``{"type": "text"}``: no constraint;
- ``{"type": "json_object"}``: any JSON object (OpenAI's JSON mode);
- ``{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": true}}``;
- ``{"type": "regex_schema", "regex_schema": "..."}``: a regular expression (LMDeploy's name);
- ``{"type": "grammar", "grammar": "..."}``: a Lark grammar, or an EBNF grammar in llama.cpp's
  GBNF notation (``root ::= ...``).

A :class:`Grammar` may stand in the field directly (the server builds one for tool calls and for
vLLM's ``guided_*`` fields, naming its own field in errors), or its fields as a dict (how it
travels to an engine process). Only the shape is checked here (pure
Python, no grammar library); whether the grammar library accepts the schema is the compiler's
question.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

KINDS = ("json_schema", "regex", "grammar")
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema", "regex_schema", "grammar")

#: The schema of JSON mode: any object.
ANY_OBJECT = {"type": "object"}


@dataclass(frozen=True)
class Grammar:
    """A constraint in a form the grammar compiler reads.

    ``kind`` is ``json_schema`` (``source`` is the schema as compact JSON text), ``regex`` or
    ``grammar`` (a Lark grammar in llguidance's dialect, which may embed JSON schemas as
    ``%json{...}``, or a GBNF grammar). ``field`` names the request field it came from, for
    error messages; it is not part of the grammar's identity, so equal grammars share one
    compiled form.
    """

    kind: str
    source: str
    field: str = field(default="response_format", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"Unknown grammar kind {self.kind!r}; use one of {', '.join(KINDS)}.")

    @classmethod
    def json_schema(cls, schema: Any, field: str = "response_format") -> Grammar:
        """A grammar for JSON values that validate against ``schema`` (a dict, or True)."""
        if not isinstance(schema, Mapping | bool):
            raise ConfigError(
                f"Invalid value for {field}: a JSON schema must be an object, "
                f"not {type(schema).__name__}."
            )
        return cls("json_schema", canonical_json(schema), field)


def canonical_json(value: Any) -> str:
    """Compact JSON text of a schema, its cache key. Keys keep their order: the order of
    ``properties`` is the order the reply writes them in."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _text_field(rf: Mapping, key: str, where: str) -> str:
    value = rf.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"Invalid value for {where}.{key}: must be a non-empty string.")
    return value


def grammar_from_response_format(rf: Any, where: str = "response_format") -> Grammar | None:
    """The grammar a ``response_format`` (a dict, or a :class:`Grammar`) asks for; None for
    plain text.

    Raises :class:`ConfigError` naming the part of ``rf`` that is malformed.
    """
    if rf is None or isinstance(rf, Grammar):
        return rf
    if isinstance(rf, Mapping) and "kind" in rf and "type" not in rf:
        return Grammar(rf["kind"], rf.get("source", ""), rf.get("field", where))
    if not isinstance(rf, Mapping):
        raise ConfigError(
            f"Invalid value for {where}: must be an object such as {{\"type\": \"json_object\"}}."
        )
    kind = rf.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return Grammar.json_schema(ANY_OBJECT, where)
    if kind == "json_schema":
        spec = rf.get("json_schema")
        if not isinstance(spec, Mapping):
            raise ConfigError(
                f"Invalid value for {where}.json_schema: must be an object with a 'schema'."
            )
        schema = spec.get("schema", ANY_OBJECT)
        return Grammar.json_schema(schema, f"{where}.json_schema.schema")
    if kind == "regex_schema":
        return Grammar("regex", _text_field(rf, "regex_schema", where), f"{where}.regex_schema")
    if kind == "grammar":
        return Grammar("grammar", _text_field(rf, "grammar", where), f"{where}.grammar")
    raise ConfigError(
        f"Invalid value for {where}.type: {kind!r}; use one of "
        f"{', '.join(RESPONSE_FORMAT_TYPES)}."
    )

