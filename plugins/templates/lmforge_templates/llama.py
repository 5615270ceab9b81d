"""Llama-family formats: Llama, Llama 2, Code Llama, Llama 3 / 3.1, Mistral and Mixtral.

Llama 3.1 calls tools with JSON replies and gets results in ``ipython`` turns; Mistral and
Mixtral call them after ``[TOOL_CALLS]``."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.chat_template import ChatTemplate, ModelFiles, SystemInUserTemplate
from lmforge.errors import ConfigError

from .matching import family, is_chat

# Meta's reference system prompt for Llama-2-Chat.
LLAMA2_SYSTEM = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe. Your answers should not include any harmful, unethical, racist, sexist, "
    "toxic, dangerous, or illegal content. Please ensure that your responses are socially "
    "unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of "
    "answering something not correct. If you don't know the answer to a question, please don't "
    "share false information."
)

# Every Llama 2 turn is "<s>[INST] {user} [/INST] {reply} </s>"; the system prompt is a <<SYS>>
# block inside the first [INST].
_LLAMA2_FIELDS = dict(
    bos="<s>", system="<<SYS>>\n", eosys="\n<</SYS>>\n\n", user="[INST] ", eoh=" [/INST]",
    assistant=" ", eoa=" </s>", separator="<s>",
)

_LLAMA3_FIELDS = dict(
    bos="<|begin_of_text|>",
    system="<|start_header_id|>system<|end_header_id|>\n\n", eosys="<|eot_id|>",
    user="<|start_header_id|>user<|end_header_id|>\n\n", eoh="<|eot_id|>",
    assistant="<|start_header_id|>assistant<|end_header_id|>\n\n", eoa="<|eot_id|>",
)


@dataclass(frozen=True)
class CodeLlamaTemplate(SystemInUserTemplate):
    """Code Llama: Llama 2's chat format, plus infilling (``prefix<FILL>suffix``)."""

    def get_prompt(self, prompt: str, sequence_start: bool = True) -> str:
        if self.capability != "infilling":
            return super().get_prompt(prompt, sequence_start)
        if prompt.count("<FILL>") != 1:
            raise ConfigError("An infilling prompt must contain exactly one <FILL> mark.")
        prefix, suffix = prompt.split("<FILL>")
        return f"<PRE> {prefix} <SUF>{suffix} <MID>"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.capability == "infilling" and not self.stop_words:
            object.__setattr__(self, "stop_words", ("<EOT>",))


def _is_llama2(f: ModelFiles) -> bool:
    return f.template_has("<<SYS>>", "[INST]") or (
        f.name_matches(r"llama[-_ ]?2") and is_chat(f)
    )


def _is_codellama(f: ModelFiles) -> bool:
    return f.name_matches(r"code[-_ ]?llama") and (is_chat(f) or f.template_has("[INST]"))


def _is_llama3(f: ModelFiles) -> bool:
    return f.template_has("<|start_header_id|>", "<|eot_id|>") or (
        f.name_matches(r"llama[-_ ]?3") and is_chat(f)
    )


def _is_llama3_1(f: ModelFiles) -> bool:
    return f.template_has("<|start_header_id|>", "Cutting Knowledge Date") or (
        f.name_matches(r"llama[-_ ]?3\.1") and is_chat(f)
    )


def _is_base_llama(f: ModelFiles) -> bool:
    return f.is_type("llama") and f.chat_template is None and not is_chat(f)


def _is_instruct(f: ModelFiles, name: str) -> bool:
    return family(f, name, name) and (f.template_has("[INST]") or f.name_matches("instruct"))


def templates() -> list[ChatTemplate]:
    return [
        ChatTemplate(name="llama", capability="completion", matcher=_is_base_llama),
        SystemInUserTemplate(
            name="llama2", meta_instruction=LLAMA2_SYSTEM, stop_words=("</s>",), priority=10,
            matcher=_is_llama2, **_LLAMA2_FIELDS,
        ),
        CodeLlamaTemplate(
            name="codellama", stop_words=("</s>",), priority=20, matcher=_is_codellama,
            **_LLAMA2_FIELDS,
        ),
        ChatTemplate(
            name="llama3", stop_words=("<|eot_id|>", "<|end_of_text|>"), priority=10,
            matcher=_is_llama3, **_LLAMA3_FIELDS,
        ),
        # Llama 3.1 always opens with a system turn that states the knowledge cut-off date.
        ChatTemplate(
            name="llama3_1", meta_instruction="",
            stop_words=("<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"), priority=20,
            matcher=_is_llama3_1, tool_parser="llama3",
            tool="<|start_header_id|>ipython<|end_header_id|>\n\n", eotool="<|eot_id|>",
            **{
                **_LLAMA3_FIELDS,
                "system": _LLAMA3_FIELDS["system"]
                + "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n",
            },
        ),
        *(
            SystemInUserTemplate(
                name=name, bos="<s>", user="[INST] ", eoh=" [/INST]", eoa="</s>", eosys="\n\n",
                stop_words=("</s>",), priority=10, tool_parser="mistral",
                matcher=lambda f, name=name: _is_instruct(f, name),
            )
            for name in ("mistral", "mixtral")
        ),
    ]
