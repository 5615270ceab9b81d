"""DeepSeek formats: DeepSeek LLM Chat, DeepSeek Coder Instruct and DeepSeek-VL."""

from __future__ import annotations

from lmforge.chat_template import ChatTemplate

from .matching import is_chat

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"

CODER_SYSTEM = (
    "You are an AI programming assistant, utilizing the Deepseek Coder model, developed by "
    "Deepseek Company, and you only answer questions related to computer science. For "
    "politically sensitive questions, security and privacy issues, and other non-computer "
    "science questions, you will refuse to answer\n"
)
VL_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using natural "
    "language."
)


def templates() -> list[ChatTemplate]:
    return [
        ChatTemplate(
            name="deepseek", bos=BOS, eosys="\n\n", user="User: ", eoh="\n\n",
            assistant="Assistant: ", eoa=EOS, stop_words=(EOS,), priority=10,
            matcher=lambda f: (f.name_matches("deepseek") and is_chat(f)
                               and not f.name_matches(r"deepseek[-_](coder|vl)")),
        ),
        ChatTemplate(
            name="deepseek-coder", bos=BOS, meta_instruction=CODER_SYSTEM,
            user="### Instruction:\n", eoh="\n", assistant="### Response:\n", eoa="\n<|EOT|>",
            separator="\n", stop_words=("<|EOT|>",), priority=20,
            matcher=lambda f: f.name_matches(r"deepseek[-_]coder") and is_chat(f),
        ),
        ChatTemplate(
            name="deepseek-vl", meta_instruction=VL_SYSTEM, eosys="\n\n", user="User: ",
            eoh="\n\n", assistant="Assistant: ", eoa=EOS, stop_words=(EOS,), priority=20,
            matcher=lambda f: f.name_matches(r"deepseek[-_]vl"),
        ),
    ]
