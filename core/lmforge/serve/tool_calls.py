"""Tool calling in chat completions: checking ``tools`` and ``tool_choice``, enforcing forced
choices with a grammar, and turning replies (whole or streamed) into OpenAI's ``tool_calls``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..messages import GenerationConfig
from ..structured import Grammar, grammar_from_response_format
from ..tools import (
    FORMATS,
    CallDelta,
    Function,
    ToolCallParser,
    ToolChoice,
    ToolFormat,
    parse_tool_choice,
    parse_tools,
)
from .errors import APIError, config_error_to_api
from .protocol import (
    ChatCompletionRequest,
    FunctionCall,
    FunctionCallDelta,
    ToolCallDelta,
    ToolCallMessage,
)

PARSER_FLAG = "--tool-call-parser"


@dataclass
class ToolUse:
    """What one chat request asks of tools."""

    functions: list[Function]
    choice: ToolChoice
    fmt: ToolFormat | None
    parallel: bool
    tools: list[Any]

    @classmethod
    def of(cls, req: ChatCompletionRequest, template: Any) -> ToolUse | None:
        """The request's tool use (None when it offers no tools); a 400 names what is wrong."""
        try:
            functions = parse_tools(req.tools)
            choice = parse_tool_choice(req.tool_choice, functions)
        except ConfigError as exc:
            raise config_error_to_api(exc) from exc
        if not functions:
            return None
        tool_format = getattr(template, "tool_format", None)
        fmt = tool_format() if tool_format is not None and choice.mode != "none" else None
        if choice.mode != "none" and fmt is None:
            raise APIError(
                400,
                "This model's chat template has no tool call format, so its replies cannot be "
                f"read as tool calls; start the server with {PARSER_FLAG} "
                f"({', '.join(FORMATS)}) to choose one.",
                param="tools",
            )
        if choice.forced and grammar_from_response_format(req.response_format) is not None:
            raise APIError(400, f"tool_choice {choice.mode!r} and response_format constrain "
                           "the reply both; give one of them.", param="response_format")
        return cls(functions, choice, fmt, req.parallel_tool_calls, list(req.tools))

    @property
    def rendered_tools(self) -> list[Any] | None:
        """The tools to offer in the prompt: none when the request forbids calls."""
        return None if self.choice.mode == "none" else self.tools

    async def configure(self, gen_config: GenerationConfig, engine: Any) -> None:
        """Constrain a forced choice with the grammar of a call, and keep the format's special
        markers in the reply's text.

        The schemas of the functions it may call are compiled first, off the event loop, so
        that one the grammar library rejects is a 400 that names its tool.
        """
        if self.fmt is None:
            return
        if self.fmt.uses_special_tokens:
            gen_config.skip_special_tokens = False
        if not self.choice.forced:
            return
        named = self.choice.mode == "function"
        functions = [f for f in self.functions if not named or f.name == self.choice.name]
        compiler = getattr(engine, "grammar_compiler", None)
        for f in functions if compiler is not None else ():
            where = f"tools[{self.functions.index(f)}].function.parameters"
            try:
                await asyncio.to_thread(compiler.compile, Grammar.json_schema(f.parameters, where))
            except ConfigError as exc:
                raise config_error_to_api(exc) from exc
        special = special_token_of(getattr(engine, "tokenizer", None))
        lark = self.fmt.call_grammar(functions, self.parallel and not named, special)
        gen_config.response_format = Grammar("grammar", lark, "tools")

    def parser(self) -> ToolCallParser | None:
        return ToolCallParser(self.fmt) if self.fmt is not None else None

    def finish_reason(self, reason: str | None, made_calls: bool) -> str | None:
        """OpenAI's: ``tool_calls`` when the model chose to call; a call of a named function
        (the request's choice, not the model's) ends with ``stop``."""
        if reason == "stop" and made_calls and self.choice.mode != "function":
            return "tool_calls"
        return reason


def special_token_of(tokenizer: Any):
    """A lookup of the ids of the tokenizer's added tokens (``<|action_start|>``, ...)."""
    hf = getattr(tokenizer, "hf", None)
    added = hf.get_added_vocab() if hf is not None else {}
    return added.get


def tool_call_messages(parser: ToolCallParser) -> tuple[str | None, list[ToolCallMessage]]:
    """Content and calls of a whole reply."""
    content, calls = parser.result()
    return content, [ToolCallMessage(id=c.id, function=FunctionCall(name=c.name,
                                                                   arguments=c.arguments))
                     for c in calls]


def tool_call_deltas(deltas: list[CallDelta]) -> list[ToolCallDelta] | None:
    """OpenAI's streamed pieces of calls."""
    if not deltas:
        return None
    return [
        ToolCallDelta(index=d.index, id=d.id, type="function" if d.id else None,
                      function=FunctionCallDelta(name=d.name, arguments=d.arguments))
        for d in deltas
    ]
