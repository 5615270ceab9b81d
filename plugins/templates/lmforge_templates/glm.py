"""GLM formats: ChatGLM2, ChatGLM3, GLM-4 and CodeGeeX4."""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.chat_template import ChatTemplate, Message
from lmforge.errors import ConfigError

CODEGEEX_SYSTEM = (
    "你是一位智能编程助手，你叫CodeGeeX。你会为用户回答关于编程、代码、计算机方面的任何问题，"
    "并提供格式规范、可以执行、准确安全的代码，并在必要时提供详细的解释。"
)


@dataclass(frozen=True)
class ChatGLM2Template(ChatTemplate):
    """ChatGLM2 numbers its rounds: ``[Round n]\\n\\n问：{user}\\n\\n答：{reply}\\n\\n``."""

    def render_conversation(self, turns: list[Message]) -> str:
        text, rounds = "", 0
        for turn in turns:
            if turn.role == "system":
                text += turn.content + self.eosys
            elif turn.role == "user":
                rounds += 1
                text += f"[Round {rounds}]\n\n{self.user}{turn.content}{self.eoh}{self.assistant}"
            else:
                text += turn.content + self.eoa + self.separator
        if turns and turns[-1].role == "assistant":
            return text[: len(text) - len(self.eoa + self.separator)]
        return text

    def get_prompt(self, prompt: str, sequence_start: bool = True) -> str:
        if not sequence_start and self.capability == "chat":
            raise ConfigError(
                "The chatglm template numbers rounds, so a follow-up turn needs the whole "
                "conversation; send it as messages."
            )
        return super().get_prompt(prompt, sequence_start)


@dataclass(frozen=True)
class GLMTemplate(ChatTemplate):
    """ChatGLM3 and GLM-4: the reply starts right after ``<|assistant|>``; the model writes the
    newline that follows it in past turns."""

    def generation_prompt(self) -> str:
        return self.assistant.rstrip("\n ")


def templates() -> list[ChatTemplate]:
    return [
        ChatGLM2Template(
            name="chatglm", user="问：", eoh="\n\n", assistant="答：", separator="\n\n",
            eosys="\n\n", priority=10,
            matcher=lambda f: f.name_matches(r"chatglm2"),
        ),
        GLMTemplate(
            name="chatglm3", bos="[gMASK]sop", system="<|system|>\n ", user="<|user|>\n ",
            assistant="<|assistant|>\n ", stop_words=("<|user|>", "<|observation|>"),
            priority=10, matcher=lambda f: f.name_matches(r"chatglm3"),
        ),
        GLMTemplate(
            name="glm4", bos="[gMASK]<sop>", system="<|system|>\n", user="<|user|>\n",
            assistant="<|assistant|>\n",
            stop_words=("<|user|>", "<|endoftext|>", "<|observation|>"), priority=10,
            matcher=lambda f: f.name_matches(r"glm[-_]?4") and not f.name_matches("codegeex"),
        ),
        # CodeGeeX4's published prompt ends with "<|assistant|>\n".
        ChatTemplate(
            name="codegeex4", bos="[gMASK]<sop>", system="<|system|>\n",
            meta_instruction=CODEGEEX_SYSTEM, user="<|user|>\n", assistant="<|assistant|>\n",
            stop_words=("<|endoftext|>", "<|user|>", "<|observation|>"), priority=20,
            matcher=lambda f: f.name_matches(r"codegeex4"),
        ),
    ]
