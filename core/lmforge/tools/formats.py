"""How each model family writes tool calls: the prompt text that offers tools, how past calls
and their results are written, where calls start in a reply, and the grammar of a call.

- ``hermes`` (Qwen2.5/3, Hermes, ChatML models):
  ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``
- ``llama3`` (Llama 3.1+): ``{"name": ..., "parameters": {...}}``, calls joined by ``; ``
- ``mistral`` (Mistral, Mixtral): ``[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]``
- ``internlm2`` (InternLM2/2.5):
  ``<|action_start|><|plugin|>\\n{"name": ..., "parameters": {...}}<|action_end|>``

The prompt texts follow each family's published chat template, so a model sees what it was
trained on; a template of the model's own with a tool section renders tools itself and only the
reply side (parsing, grammar) comes from here.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..structured.compiler import JSON_OPTIONS
from .spec import Function

#: A token's id when the vocabulary has it as one special token, else None.
SpecialToken = Callable[[str], "int | None"]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def call_arguments(call: Mapping[str, Any]) -> tuple[str, Any]:
    """Name and arguments (parsed when they are JSON text) of an OpenAI ``tool_calls`` entry."""
    fn = call.get("function", call)
    arguments = fn.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
    return str(fn.get("name", "")), arguments


@dataclass(frozen=True)
class ToolFormat(ABC):
    """One family's tool-call format; subclasses fill in the texts."""

    name: str
    call_start: str  # what opens the calls in a reply
    args_key: str = "arguments"
    # Markers that are special tokens in the family's vocabulary: the reply keeps them as text
    # (skip_special_tokens off) so that calls can be found.
    uses_special_tokens: bool = False
    # A reply that opens with "{" is a call even without the marker.
    bare_json_call: bool = False

    # -------------------------------------------------------------- prompt side

    @abstractmethod
    def system_with_tools(self, system: str, tools: Sequence[Mapping[str, Any]]) -> str:
        """The system prompt with the tools offered."""

    def call_text(self, name: str, arguments: Any) -> str:
        """One past call, as the model writes it."""
        return _dumps({"name": name, self.args_key: arguments})

    @abstractmethod
    def calls_text(self, content: str, calls: Sequence[Mapping[str, Any]]) -> str:
        """A past assistant turn that made ``calls``."""

    def result_text(self, content: str) -> str:
        """A tool's result, written inside a user turn."""
        return content

    # -------------------------------------------------------------- grammar

    def call_grammar(self, functions: Sequence[Function], parallel: bool,
                     special: SpecialToken) -> str:
        """A Lark grammar (llguidance's dialect) of a reply made of calls of ``functions``."""
        rules = [f"start: {self.calls_rule(parallel, special)}",
                 "fn: " + " | ".join(f"fn{i}" for i in range(len(functions)))]
        rules += [f"fn{i}: %json {_dumps(self.call_schema(f))}" for i, f in enumerate(functions)]
        return "\n".join(rules) + "\n"

    def call_schema(self, function: Function) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"name": {"const": function.name}, self.args_key: function.parameters},
            "required": ["name", self.args_key],
            "additionalProperties": False,
            "x-guidance": JSON_OPTIONS,
        }

    @abstractmethod
    def calls_rule(self, parallel: bool, special: SpecialToken) -> str:
        """The Lark term of the calls (rule ``fn`` is one call)."""


def lark_text(text: str, special: SpecialToken) -> str:
    """A Lark term for ``text``: the special token itself when the vocabulary has one."""
    token = special(text)
    return f"<[{token}]>" if token is not None else _dumps(text)


@dataclass(frozen=True)
class HermesFormat(ToolFormat):
    name: str = "hermes"
    call_start: str = "<tool_call>"

    def system_with_tools(self, system, tools):
        listed = "".join("\n" + _dumps(tool) for tool in tools)
        return (
            f"{system}\n\n# Tools\n\nYou may call one or more functions to assist with the user "
            "query.\n\nYou are provided with function signatures within <tools></tools> XML "
            f"tags:\n<tools>{listed}\n</tools>\n\nFor each function call, return a json object "
            "with function name and arguments within <tool_call></tool_call> XML tags:\n"
            '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
            "</tool_call>"
        ).lstrip("\n")

    def calls_text(self, content, calls):
        parts = [content] if content else []
        parts += [f"<tool_call>\n{self.call_text(*call_arguments(c))}\n</tool_call>"
                  for c in calls]
        return "\n".join(parts)

    def result_text(self, content):
        return f"<tool_response>\n{content}\n</tool_response>"

    def calls_rule(self, parallel, special):
        call = '"<tool_call>\\n" fn "\\n</tool_call>"'
        return f'{call} ("\\n" {call})*' if parallel else call


@dataclass(frozen=True)
class Llama3Format(ToolFormat):
    name: str = "llama3"
    call_start: str = "<|python_tag|>"
    args_key: str = "parameters"
    uses_special_tokens: bool = True
    bare_json_call: bool = True

    def system_with_tools(self, system, tools):
        listed = "\n\n".join(_dumps(tool) for tool in tools)
        intro = (
            "You have access to the following functions. To call a function, please respond "
            "with JSON for a function call. Respond in the format {\"name\": function name, "
            "\"parameters\": dictionary of argument name and its value}. Do not use variables."
        )
        return f"{system}\n\n{intro}\n\n{listed}".lstrip("\n")

    def calls_text(self, content, calls):
        return "; ".join(self.call_text(*call_arguments(c)) for c in calls)

    def calls_rule(self, parallel, special):
        return 'fn ("; " fn)*' if parallel else "fn"


@dataclass(frozen=True)
class MistralFormat(ToolFormat):
    name: str = "mistral"
    call_start: str = "[TOOL_CALLS]"
    uses_special_tokens: bool = True

    def system_with_tools(self, system, tools):
        listed = _dumps([dict(tool) for tool in tools])
        return f"[AVAILABLE_TOOLS] {listed}[/AVAILABLE_TOOLS]{system}"

    def calls_text(self, content, calls):
        listed = ", ".join(self.call_text(*call_arguments(c)) for c in calls)
        return f"{content}[TOOL_CALLS] [{listed}]"

    def result_text(self, content):
        return f"[TOOL_RESULTS] {_dumps({'content': content})}[/TOOL_RESULTS]"

    def calls_rule(self, parallel, special):
        calls = 'fn (", " fn)*' if parallel else "fn"
        return f'{lark_text("[TOOL_CALLS]", special)} " "? "[" {calls} "]"'


@dataclass(frozen=True)
class InternLM2Format(ToolFormat):
    name: str = "internlm2"
    call_start: str = "<|action_start|>"
    args_key: str = "parameters"
    uses_special_tokens: bool = True

    def system_with_tools(self, system, tools):
        # The tools are a second system turn of their own, named for the plugin channel.
        listed = _dumps([tool.get("function", tool) for tool in tools])
        return f"{system}<|im_end|>\n<|im_start|>system name=<|plugin|>\n{listed}"

    def calls_text(self, content, calls):
        return content + "".join(
            f"<|action_start|><|plugin|>\n{self.call_text(*call_arguments(c))}<|action_end|>"
            for c in calls)

    def result_text(self, content):
        return content

    def calls_rule(self, parallel, special):
        start = lark_text("<|action_start|>", special) + " " + lark_text("<|plugin|>", special)
        return f'{start} "\\n" fn {lark_text("<|action_end|>", special)}'


FORMATS: dict[str, ToolFormat] = {
    f.name: f for f in (HermesFormat(), Llama3Format(), MistralFormat(), InternLM2Format())
}
ALIASES = {"qwen": "hermes", "qwen2d5": "hermes", "qwen3": "hermes", "llama3_json": "llama3",
           "llama3_1": "llama3", "internlm": "internlm2"}


def get_format(name: str) -> ToolFormat:
    """The format called ``name`` (or one of its aliases: qwen, llama3_json, internlm)."""
    fmt = FORMATS.get(ALIASES.get(name, name))
    if fmt is None:
        raise ConfigError(
            f"Unknown tool call parser {name!r}; use one of {', '.join(FORMATS)}."
        )
    return fmt


def detect_format(template_source: str | None) -> str | None:
    """The tool format a Jinja chat template writes calls in, from its markers."""
    if not template_source:
        return None
    for marker, name in (("<tool_call>", "hermes"), ("[TOOL_CALLS]", "mistral"),
                         ("<|action_start|>", "internlm2"), ("<|python_tag|>", "llama3"),
                         ("ipython", "llama3")):
        if marker in template_source:
            return name
    return None
