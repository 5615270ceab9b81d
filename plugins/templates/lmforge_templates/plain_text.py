"""Formats that mark roles with plain text ("USER:", "### Human:", "Question:") or with a few
reserved tokens: Vicuna and its descendants, CogVLM, UltraLM, SOLAR, Yi-VL, InternVL-Chinese,
Falcon, Baichuan2, InternLM and puyu."""

from __future__ import annotations

from lmforge.chat_template import ChatTemplate

from .matching import family, is_chat

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions."
)
LLAVA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant "
    "gives helpful, detailed, and polite answers to the human's questions."
)
ULTRA_SYSTEM = (
    "A one-turn chat between a curious user and an artificial intelligence assistant. The "
    "assistant gives helpful, very detailed, and polite answers to the user's questions."
)
YI_VL_SYSTEM = (
    "This is a chat between an inquisitive human and an AI assistant. Assume the role of the AI "
    "assistant. Read all the images carefully, and respond to the human's questions with "
    "informative, helpful, detailed and polite answers. 这是一个好奇的人类和一个人工智能助手之间的对话。"
    "假设你扮演这个AI助手的角色。仔细阅读所有的图像，并对人类的问题做出信息丰富、有帮助、详细的和礼貌的回答。"
)
INTERNLM_V1_SYSTEM = (
    "You are an AI assistant whose name is InternLM (书生·浦语).\n"
    "- InternLM (书生·浦语) is a conversational language model that is developed by Shanghai AI "
    "Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
    "- InternLM (书生·浦语) can understand and communicate fluently in the language chosen by the "
    "user such as English and 中文."
)


def vicuna(name: str, meta_instruction: str = VICUNA_SYSTEM, **fields) -> ChatTemplate:
    """FastChat's vicuna_v1.1: ``{system} USER: {user} ASSISTANT: {reply}</s>USER: ...``."""
    return ChatTemplate(
        name=name, meta_instruction=meta_instruction, eosys=" ", user="USER: ", eoh=" ",
        assistant="ASSISTANT: ", eoa="</s>", stop_words=("</s>",), **fields,
    )


def question_answer(name: str, stop: str, **fields) -> ChatTemplate:
    """CogVLM's chat format: ``Question: {user} Answer: {reply}\\n``."""
    return ChatTemplate(
        name=name, eosys="\n", user="Question: ", eoh=" ", assistant="Answer: ",
        separator="\n", stop_words=(stop,), **fields,
    )


def templates() -> list[ChatTemplate]:
    return [
        vicuna("vicuna", priority=10,
               matcher=lambda f: f.name_matches("vicuna") and not f.name_matches("llava")),
        vicuna("wizardlm", priority=10, matcher=lambda f: f.name_matches("wizardlm")),
        vicuna("llava-v1", meta_instruction=LLAVA_SYSTEM, priority=20,
               matcher=lambda f: (f.name_matches(r"llava.*(v1|1\.5)")
                                  and not f.name_matches(r"34b|mistral"))),
        vicuna("mini-gemini-vicuna", priority=20,
               matcher=lambda f: f.name_matches(r"(mgm|mini[-_]gemini)[-_](7b|13b)")),
        question_answer("cogvlm", "</s>", priority=10,
                        matcher=lambda f: f.name_matches(r"cogvlm(?!2)")),
        question_answer("cogvlm2", "<|end_of_text|>", priority=20,
                        matcher=lambda f: f.name_matches("cogvlm2")),
        *(
            ChatTemplate(
                name=name, system="User: ", meta_instruction=ULTRA_SYSTEM, eosys="</s>\n",
                user="User: ", eoh="</s>\n", assistant="Assistant: ", eoa="</s>",
                separator="\n", stop_words=("</s>",), priority=10,
                matcher=lambda f, name=name: f.name_matches(name),
            )
            for name in ("ultracm", "ultralm")
        ),
        # SOLAR Instruct's own template writes no break between a reply and the next turn.
        ChatTemplate(
            name="solar", system="### System:\n", eosys="\n\n", user="### User:\n",
            eoh="\n\n", assistant="### Assistant:\n", stop_words=("</s>",), priority=10,
            matcher=lambda f: f.name_matches("solar") and is_chat(f),
        ),
        ChatTemplate(
            name="yi-vl", meta_instruction=YI_VL_SYSTEM, eosys="\n\n", user="### Human: ", eoh="\n",
            assistant="### Assistant: ", separator="\n", stop_words=("###",), priority=20,
            matcher=lambda f: f.name_matches(r"yi[-_]vl"),
        ),
        ChatTemplate(
            name="internvl-zh", eosys="\n", user="<human>: ", eoh=" ", assistant="<bot>: ",
            eoa="</s>", stop_words=("</s>",), priority=20,
            matcher=lambda f: f.name_matches(r"internvl[-_]chat.*v1[-_.]1"),
        ),
        # Falcon-180B-Chat's published format.
        ChatTemplate(
            name="falcon", system="System: ", eosys="\n", user="User: ", eoh="\n",
            assistant="Falcon: ", separator="\n", stop_words=("\nUser:", "<|endoftext|>"),
            priority=10, matcher=lambda f: family(f, "falcon", "falcon") and is_chat(f),
        ),
        # Baichuan2-Chat: the system text is written bare, turns open with reserved tokens.
        ChatTemplate(
            name="baichuan2", user="<reserved_106>", assistant="<reserved_107>",
            stop_words=("</s>",), priority=10,
            matcher=lambda f: f.name_matches("baichuan2") and is_chat(f),
        ),
        ChatTemplate(
            name="internlm", system="<|System|>:", meta_instruction=INTERNLM_V1_SYSTEM,
            eosys="\n", user="<|User|>:", eoh="\n", assistant="<|Bot|>:", eoa="<eoa>",
            separator="\n", stop_words=("<eoa>",), priority=10,
            matcher=lambda f: (family(f, "internlm", "internlm") and is_chat(f)
                               and not f.name_matches("internlm2|xcomposer|internvl")),
        ),
        # puyu writes the turns' text with no marks at all.
        ChatTemplate(name="puyu", priority=10, matcher=lambda f: f.name_matches("puyu")),
    ]
