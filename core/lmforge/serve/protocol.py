"""Request and response bodies of the OpenAI-compatible server, in OpenAI's exact shapes.

Requests accept unknown fields and ignore them, as OpenAI's own server does for fields a model does
not use; values are type- and range-checked here so that a bad one is a 400 that names the field.
Types are strict (``"stream": "yes"`` is not a boolean, ``1e30`` is not an integer), numbers are
finite, and bounds that depend on the served model (the session length, the vocabulary) are
checked in :mod:`.sampling`.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, StrictBool

Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]  # accepts JSON integers too, never strings
Bool = StrictBool
#: A seed is any 64-bit value, signed or not.
Seed = Annotated[int, Strict(), Field(ge=-(2**63), lt=2**64)]
#: A session id is a signed 64-bit value; -1 asks the server to pick one.
SessionId = Annotated[int, Strict(), Field(ge=-1, lt=2**63)]
MAX_STOP_WORDS = 32
#: Choices one ``/v1/completions`` request may ask for: prompts times ``n``.
MAX_CHOICES = 256


def random_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def _check_stop_words(stop: str | list[str] | None) -> str | list[str] | None:
    if isinstance(stop, list) and len(stop) > MAX_STOP_WORDS:
        raise ValueError(f"at most {MAX_STOP_WORDS} stop strings are allowed")
    return stop


Stop = Annotated[str | list[str] | None, AfterValidator(_check_stop_words)]


class RequestBody(BaseModel):
    """What every request body shares: unknown fields are ignored, numbers must be finite."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class TextPart(RequestBody):
    """One part of a message's content; this server serves text-only models."""

    type: Literal["text"]
    text: str


class MessageParam(RequestBody):
    """A message of a conversation. Fields beyond ``role`` and ``content`` (``name``,
    an assistant's ``tool_calls``, a tool result's ``tool_call_id``...) are kept and handed to
    the chat template."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None


class StreamOptions(RequestBody):
    include_usage: Bool = False


class SamplingFields(RequestBody):
    """Sampling fields shared by the chat and text completion requests."""

    model: str = Field(description="The served model's name, as ``GET /v1/models`` lists it.")
    max_tokens: Int | None = Field(
        default=None, ge=0, description="At most the session length (``max_model_len``)."
    )
    temperature: Float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: Float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: Int | None = Field(
        default=None, ge=0, description="0, or any value from the vocabulary size up, means no limit."
    )
    min_p: Float = Field(default=0.0, ge=0.0, le=1.0)
    n: Int = Field(default=1, ge=1, le=128)
    stop: Stop = Field(default=None, description=f"At most {MAX_STOP_WORDS} strings.")
    seed: Seed | None = None
    repetition_penalty: Float = Field(default=1.0, gt=0.0)
    presence_penalty: Float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: Float = Field(default=0.0, ge=-2.0, le=2.0)
    stream: Bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: Bool = False
    skip_special_tokens: Bool = True
    min_tokens: Int | None = Field(default=None, ge=0, description="At most max_tokens.")
    # Structured output: OpenAI's field (with LMDeploy's regex_schema type), or one of vLLM's
    # guided_* fields. Their contents are checked by lmforge.structured, which names the part.
    response_format: dict[str, Any] | None = Field(
        default=None, description='{"type": "json_object"}, {"type": "json_schema", '
        '"json_schema": {"name", "schema", "strict"}} or {"type": "regex_schema", '
        '"regex_schema": ...}.')
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = Field(default=None, min_length=1)
    guided_grammar: str | None = Field(default=None, description="Lark or GBNF.")

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: list[MessageParam] = Field(min_length=1)
    max_completion_tokens: Int | None = Field(default=None, ge=0)
    logprobs: Bool = False
    top_logprobs: Int | None = Field(default=None, ge=0, le=20)
    session_id: SessionId | None = Field(
        default=None,
        description="Accepted for LMDeploy's clients and ignored: a chat completion keeps no "
        "history; /v1/chat/interactive does.",
    )
    # Checked by lmforge.tools, which names the bad entry.
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = Field(
        default=None, description='"none", "auto", "required" or {"type": "function", '
        '"function": {"name": ...}}.')
    parallel_tool_calls: Bool = True


class CompletionRequest(SamplingFields):
    """``POST /v1/completions``: ``prompt`` is a string, strings, token ids or lists of token ids."""

    prompt: str | list[str] | list[Int] | list[list[Int]] = Field(
        description="Token ids must lie in [0, vocabulary size); at most "
        f"{MAX_CHOICES} choices (prompts times n) per request."
    )
    max_tokens: Int | None = Field(default=16, ge=0, description="At most the session length.")
    logprobs: Int | None = Field(default=None, ge=0, le=20)
    session_id: SessionId | None = Field(
        default=None, description="Accepted for LMDeploy's clients and ignored."
    )


class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        self.total_tokens = self.prompt_tokens + self.completion_tokens


# --- chat ---------------------------------------------------------------------------------------


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None = None


FinishReason = Literal["stop", "length", "tool_calls", "abort", "error"]


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON text


class ToolCallMessage(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    role: str = "assistant"
    content: str | None = None
    tool_calls: list[ToolCallMessage] | None = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: random_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo


class FunctionCallDelta(BaseModel):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(BaseModel):
    """A piece of a streamed tool call: ``id``, ``type`` and the name come in its first piece,
    the arguments' text in pieces after."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta


class DeltaMessage(BaseModel):
    role: str | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: DeltaMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None


# --- text completions ---------------------------------------------------------------------------


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length", "abort", "error"] | None = None


class CompletionResponse(BaseModel):
    """Both the whole response and each streamed chunk (OpenAI uses one shape for both)."""

    id: str = Field(default_factory=lambda: random_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


# --- models ------------------------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "lmforge"
    root: str | None = None
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- interactive (LMDeploy's /v1/chat/interactive) ------------------------------------------------


class InteractiveRequest(RequestBody):
    """``POST /v1/chat/interactive``: the server keeps the session's history (its KV cache).

    ``interactive_mode=True`` continues (or opens) session ``session_id``; ``False`` runs one
    stateless request and ends any session of that id. ``cancel=True`` stops the session's running
    request.
    """

    prompt: str | list[MessageParam] = ""
    messages: list[MessageParam] | None = None
    session_id: SessionId = Field(
        default=-1, description="Scoped to the API key (or the client's address without keys)."
    )
    interactive_mode: Bool = False
    stream: Bool = False
    stop: Stop = None
    request_output_len: Int | None = Field(default=None, ge=0)
    max_tokens: Int | None = Field(default=None, ge=0)
    temperature: Float = Field(default=0.8, ge=0.0, le=2.0)
    top_p: Float = Field(default=0.8, gt=0.0, le=1.0)
    top_k: Int = Field(default=40, ge=0)
    min_p: Float = Field(default=0.0, ge=0.0, le=1.0)
    repetition_penalty: Float = Field(default=1.0, gt=0.0)
    seed: Seed | None = None
    ignore_eos: Bool = False
    skip_special_tokens: Bool = True
    cancel: Bool = False
    adapter_name: str | None = None



class InteractiveResponse(BaseModel):
    """One response (or, streamed, one newline-delimited JSON chunk) of an interactive turn."""

    text: str
    tokens: int
    input_tokens: int
    history_tokens: int
    session_id: int
    finish_reason: Literal["stop", "length", "abort", "error"] | None = None


class CancelResponse(BaseModel):
    """The answer to ``cancel: true``: whether a running turn of the session was stopped."""

    session_id: int
    cancelled: bool


# --- errors ------------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
