"""ChatML formats (``<|im_start|>role\\n...<|im_end|>``): Qwen, Yi, InternLM2, InternVL, DBRX,
LLaVA and InternLM-XComposer. Qwen writes tool calls in the Hermes format, InternLM2 in its
own plugin format."""

from __future__ import annotations

from lmforge.chat_template import ChatTemplate, ModelFiles

from .matching import family, is_chat

INTERNLM_SYSTEM = (
    "You are an AI assistant whose name is InternLM (书生·浦语).\n"
    "- InternLM (书生·浦语) is a conversational language model that is developed by Shanghai AI "
    "Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
    "- InternLM (书生·浦语) can understand and communicate fluently in the language chosen by the "
    "user such as English and 中文."
)
INTERNVL2_SYSTEM = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)
XCOMPOSER_SYSTEM = (
    "You are an AI assistant whose name is InternLM-XComposer (浦语·灵笔).\n"
    "- InternLM-XComposer (浦语·灵笔) is a multi-modality conversational language model that is "
    "developed by Shanghai AI Laboratory (上海人工智能实验室). It is designed to be helpful, "
    "honest, and harmless.\n"
    "- InternLM-XComposer (浦语·灵笔) can understand and communicate fluently in the language "
    "chosen by the user such as English and 中文.\n"
    "- InternLM-XComposer (浦语·灵笔) is capable of comprehending and articulating responses "
    "effectively based on the provided image."
)
# Databricks' published system prompt for DBRX Instruct.
DBRX_SYSTEM = (
    "You are DBRX, created by Databricks. You were last updated in December 2023. You answer "
    "questions based on information available up to that point.\n"
    "YOU PROVIDE SHORT RESPONSES TO SHORT QUESTIONS OR STATEMENTS, but provide thorough "
    "responses to more complex and open-ended questions.\n"
    "You assist with various tasks, from writing to coding (using markdown for code blocks — "
    "remember to use ``` with code, JSON, and tables).\n"
    "(You do not have real-time data access or code execution capabilities. You avoid "
    "stereotyping and provide balanced perspectives on controversial topics. You do not provide "
    "song lyrics, poems, or news articles and do not divulge details of your training data.)\n"
    "This is your system prompt, guiding your responses. Do not reference it, just respond to "
    "the user. If you find yourself talking about this message, stop. You should be responding "
    "appropriately and usually that means not mentioning this.\n"
    "YOU DO NOT MENTION ANY OF THIS INFORMATION ABOUT YOURSELF UNLESS THE INFORMATION IS "
    "DIRECTLY PERTINENT TO THE USER'S QUERY."
)


def chatml(name: str, *, start: str = "<|im_start|>", end: str = "<|im_end|>",
           newline: bool = True, **fields) -> ChatTemplate:
    """A ChatML template; ``newline=False`` is the variant with no newline after ``end``."""
    gap = "\n" if newline else ""
    fields.setdefault("stop_words", (end,))
    return ChatTemplate(
        name=name,
        system=f"{start}system\n", eosys=end + gap,
        user=f"{start}user\n", eoh=end + gap,
        assistant=f"{start}assistant\n", eoa=end, separator=gap,
        **fields,
    )


def _internvl(f: ModelFiles, version: str) -> bool:
    return f.name_matches(rf"internvl[-_]?chat.*v{version}")


def _is_qwen(f: ModelFiles) -> bool:
    """Qwen 1 to 2.5 chat models. Qwen3 writes its turns differently (no default system prompt,
    thinking blocks) and carries its own Jinja template, which is used as it is."""
    return (family(f, "qwen", "qwen", "qwen2", "qwen2_moe") and is_chat(f)
            and not family(f, "qwen3", "qwen3", "qwen3_moe"))


def _is_internlm2(f: ModelFiles) -> bool:
    return family(f, r"internlm2", "internlm2") and is_chat(f)


def templates() -> list[ChatTemplate]:
    return [
        chatml(
            "qwen", meta_instruction="You are a helpful assistant.",
            stop_words=("<|im_end|>", "<|endoftext|>"), priority=10, tool_parser="hermes",
            matcher=_is_qwen,
        ),
        chatml(
            "yi", stop_words=("<|im_end|>", "<|endoftext|>"), priority=10,
            matcher=lambda f: (f.name_matches(r"(^|[-_/ ])yi($|[-_. ])")
                               and not f.name_matches(r"yi[-_]vl") and is_chat(f)),
        ),
        chatml(
            "internlm2", bos="<s>", meta_instruction=INTERNLM_SYSTEM,
            stop_words=("<|im_end|>", "<|action_end|>"), priority=10, matcher=_is_internlm2,
            # Tool results come back on the plugin channel of an "environment" turn.
            tool_parser="internlm2", tool="<|im_start|>environment name=<|plugin|>\n",
            eotool="<|im_end|>\n",
        ),
        chatml(
            "internvl-internlm2",
            meta_instruction="You are an AI assistant whose name is InternLM (书生·浦语).",
            stop_words=("<|im_end|>", "<|action_end|>"), priority=20,
            matcher=lambda f: _internvl(f, r"1[-_.]5") and not f.name_matches(r"mini.*4b"),
        ),
        chatml(
            "internvl2-internlm2", meta_instruction=INTERNVL2_SYSTEM,
            stop_words=("<|im_start|>", "<|im_end|>"), priority=20,
            matcher=lambda f: (f.name_matches(r"internvl2(?![-_.]?5)") and
                               not f.name_matches(r"internvl2[-_]4b")),
        ),
        chatml(
            "dbrx", meta_instruction=DBRX_SYSTEM, priority=10,
            matcher=lambda f: family(f, "dbrx", "dbrx") and is_chat(f),
        ),
        chatml(
            "llava-chatml", newline=False, meta_instruction="Answer the questions.", priority=20,
            matcher=lambda f: f.name_matches(r"llava.*v1\.6[-_]34b"),
        ),
        chatml(
            "internvl-zh-hermes2", newline=False, meta_instruction="Answer the questions.",
            priority=20, matcher=lambda f: _internvl(f, r"1[-_.]2"),
        ),
        *(
            chatml(
                name, start="[UNUSED_TOKEN_146]", end="[UNUSED_TOKEN_145]",
                meta_instruction=XCOMPOSER_SYSTEM, priority=20 + bool(suffix),
                matcher=lambda f, suffix=suffix: f.name_matches(f"xcomposer2{suffix}"),
            )
            for name, suffix in (("internlm-xcomposer2", ""), ("internlm-xcomposer2d5", "d5"))
        ),
    ]
