"""The chat template: how a conversation becomes the prompt text a model was trained on.

Most families fit one field scheme (LMDeploy's), rendered as::

    {bos}{system}{meta_instruction}{eosys}{user}{user content}{eoh}
    {assistant}{assistant content}{eoa}{separator}{user}...{assistant}

A family whose format does not fit overrides the few methods that differ. Prompts carry every
special token the family's own template writes out (a BOS among them, where it writes one);
the tokenizer adds a BOS only when the text does not already start with it.

Tools: a template with a ``tool_parser`` (a format of :mod:`lmforge.tools.formats`) renders the
tools a request offers, past tool calls and tool results (``{tool}{result}{eotool}`` turns when
it has a tool role, else inside user turns) and its replies are parsed for calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..tools.formats import ToolFormat, get_format
from ..tools.render import fold_tools, has_tool_turns

if TYPE_CHECKING:
    from .model_files import ModelFiles

CAPABILITIES = ("completion", "infilling", "chat", "python")
ROLES = ("system", "user", "assistant")

#: The fields of the scheme, in the order ``ChatTemplateConfig`` lists them.
FIELDS = (
    "system", "meta_instruction", "eosys", "user", "eoh", "assistant", "eoa", "tool", "eotool",
    "separator", "capability", "stop_words",
)


@dataclass(frozen=True)
class Message:
    """One turn of a conversation, its content flattened to text."""

    role: str
    content: str


def content_text(content: Any) -> str:
    """The text of an OpenAI-style ``content``: a string, or a list of ``{"type": "text"}`` parts.

    Text parts are joined by newlines, as OpenAI-compatible servers do.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            if kind != "text":
                raise ConfigError(
                    f"Message content part of type {kind!r} is not supported by text chat "
                    "templates; send parts of type 'text'."
                )
            texts.append(part.get("text", ""))
        return "\n".join(texts)
    raise ConfigError(
        f"Message content must be a string or a list of text parts, not {type(content).__name__}."
    )


def normalize_messages(messages: Iterable[Mapping[str, Any]],
                       roles: tuple[str, ...] = ROLES) -> list[Message]:
    """Check roles and flatten contents of OpenAI-style messages."""
    result = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise ConfigError(f"Message {i} must be a mapping with a 'role' and a 'content'.")
        role = message["role"]
        if role == "tool" and role not in roles:
            raise ConfigError(
                f"Message {i} has role 'tool' but the chat template has no tool format; "
                "choose a tool call parser (the server's --tool-call-parser)."
            )
        if role not in roles:
            raise ConfigError(
                f"Message {i} has role {role!r}; chat templates accept {', '.join(roles)}."
            )
        result.append(Message(role, content_text(message.get("content"))))
    return result


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template in LMDeploy's field scheme (see the module docstring).

    ``meta_instruction`` is the default system prompt: ``None`` means the family has none, so a
    conversation without a system message gets no system block; a string (even empty) is
    written as the system block when the conversation does not bring its own.
    ``matcher`` decides whether the template fits a model from the model's own files;
    ``priority`` ranks templates that both match (a more specific family ranks higher), so the
    choice never depends on registration order. ``tool_parser`` names the family's tool-call
    format (``hermes``, ``llama3``, ``mistral``, ``internlm2``); ``tool`` and ``eotool`` open
    and close a tool result's turn where the family has one.
    """

    name: str = "base"
    system: str = ""
    meta_instruction: str | None = None
    eosys: str = ""
    user: str = ""
    eoh: str = ""
    assistant: str = ""
    eoa: str = ""
    tool: str = ""
    eotool: str = ""
    separator: str = ""
    capability: str = "chat"
    stop_words: tuple[str, ...] = ()
    bos: str = ""
    priority: int = 0
    tool_parser: str | None = None
    matcher: Callable[[ModelFiles], bool] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.capability not in CAPABILITIES:
            raise ConfigError(
                f"capability must be one of {', '.join(CAPABILITIES)}, not {self.capability!r}."
            )
        if not isinstance(self.stop_words, tuple):
            object.__setattr__(self, "stop_words", tuple(self.stop_words or ()))

    # ---------------------------------------------------------------------------- matching

    def match(self, model_files: ModelFiles) -> bool:
        """Whether this template is the format of the model described by ``model_files``."""
        return self.matcher is not None and bool(self.matcher(model_files))

    def replace(self, **changes: Any) -> ChatTemplate:
        """A copy with some fields changed (what a ``ChatTemplateConfig`` override does)."""
        return dataclasses.replace(self, **changes)

    def tool_format(self) -> ToolFormat | None:
        """The format this template writes tool calls in, or None when it has none."""
        return get_format(self.tool_parser) if self.tool_parser else None

    def _fold_tools(self, messages: list[Mapping[str, Any]], tools: list | None,
                    default_system: str | None) -> list[dict]:
        fmt = self.tool_format()
        if fmt is None:
            raise ConfigError(
                f"Chat template {self.name!r} has no tool format for tools, tool_calls or role "
                "'tool'; choose a tool call parser (the server's --tool-call-parser)."
            )
        return fold_tools(messages, tools, fmt, default_system, tool_role=bool(self.tool))

    # ---------------------------------------------------------------------------- rendering

    def get_prompt(self, prompt: str, sequence_start: bool = True) -> str:
        """The prompt for one user message.

        ``sequence_start=False`` renders a follow-up turn of an interactive session, whose
        history already ends with the model's end-of-turn stop word.
        """
        if self.capability in ("completion", "python"):
            return prompt
        if self.capability == "infilling":
            raise ConfigError(
                f"Chat template {self.name!r} does not support infilling; use capability "
                "'chat' or 'completion', or the 'codellama' template."
            )
        if sequence_start:
            return self.messages2prompt([{"role": "user", "content": prompt}])
        return self.separator + self.render_turn(Message("user", prompt)) + self.generation_prompt()

    def messages2prompt(self, messages: str | list[Mapping[str, Any]],
                        sequence_start: bool = True, tools: list | None = None) -> str:
        """The prompt for OpenAI-style ``messages`` (roles system/user/assistant, and tool).

        A conversation that ends with an assistant message renders that message open, so the
        model continues it; otherwise the prompt ends with the assistant's generation prompt.
        ``tools`` (OpenAI's tool list) are offered in the template's tool format.
        """
        if isinstance(messages, str):
            return self.get_prompt(messages, sequence_start)
        if tools or has_tool_turns(messages):
            default = self.meta_instruction if sequence_start else None
            messages = self._fold_tools(messages, tools, default)
        turns = normalize_messages(messages, ROLES + ("tool",) if self.tool else ROLES)
        if self.capability in ("completion", "python"):
            return "".join(turn.content for turn in turns)
        if self.capability == "infilling":
            raise ConfigError(
                f"Chat template {self.name!r} renders infilling prompts from a single string "
                "with a <FILL> mark, not from messages."
            )
        if sequence_start and self.meta_instruction is not None and (
            not turns or turns[0].role != "system"
        ):
            turns.insert(0, Message("system", self.meta_instruction))
        return (self.bos if sequence_start else "") + self.render_conversation(turns)

    def render_conversation(self, turns: list[Message]) -> str:
        """Every turn, then the generation prompt or the open last assistant turn."""
        text = "".join(self.render_turn(turn) for turn in turns)
        if turns and turns[-1].role == "assistant":
            return text[: len(text) - len(self.end_of_turn("assistant"))]
        return text + self.generation_prompt()

    def render_turn(self, turn: Message) -> str:
        """One turn, with its role's begin and end marks."""
        return self.begin_of_turn(turn.role) + turn.content + self.end_of_turn(turn.role)

    def begin_of_turn(self, role: str) -> str:
        return {"system": self.system, "user": self.user, "assistant": self.assistant,
                "tool": self.tool}[role]

    def end_of_turn(self, role: str) -> str:
        return {"system": self.eosys, "user": self.eoh, "assistant": self.eoa + self.separator,
                "tool": self.eotool}[role]

    def generation_prompt(self) -> str:
        """What opens the assistant's reply.

        A trailing space of ``assistant`` belongs to the reply's first token with SentencePiece
        and BPE vocabularies ("▁Hello", "ĠHello"), so the published prompts end before it.
        """
        return self.assistant.rstrip(" ")


@dataclass(frozen=True)
class SystemInUserTemplate(ChatTemplate):
    """A format without a system turn: the system prompt opens the first user turn.

    It is written as ``{system}{system prompt}{eosys}`` right after that turn's ``user`` mark
    (Llama 2's ``<<SYS>>`` block; Mistral's and Gemma's blank line).
    """

    def render_conversation(self, turns: list[Message]) -> str:
        if turns and turns[0].role == "system":
            system, rest = turns[0], turns[1:]
            if not rest or rest[0].role != "user":
                rest = [Message("user", ""), *rest]
            merged = self.system + system.content + self.eosys + rest[0].content
            turns = [Message("user", merged), *rest[1:]]
        return super().render_conversation(turns)
