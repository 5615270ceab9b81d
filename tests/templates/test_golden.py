"""Every built-in template renders a two-turn chat exactly as its model family publishes it.

The expected strings are written out from the families' published formats (model cards, the
tokenizers' own chat templates, the reference chat code), not from lmforge's code.
"""

from __future__ import annotations

import pytest
from lmforge.chat_template import get_template, template_names

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Name a color."},
]

CHATML = (
    "<|im_start|>system\nYou are terse.<|im_end|>\n"
    "<|im_start|>user\nHi!<|im_end|>\n"
    "<|im_start|>assistant\nHello.<|im_end|>\n"
    "<|im_start|>user\nName a color.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
CHATML_DIRECT = (
    "<|im_start|>system\nYou are terse.<|im_end|>"
    "<|im_start|>user\nHi!<|im_end|>"
    "<|im_start|>assistant\nHello.<|im_end|>"
    "<|im_start|>user\nName a color.<|im_end|>"
    "<|im_start|>assistant\n"
)
LLAMA2 = (
    "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST] Hello. </s>"
    "<s>[INST] Name a color. [/INST]"
)
LLAMA3_TAIL = (
    "You are terse.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nName a color.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
MISTRAL = "<s>[INST] You are terse.\n\nHi! [/INST]Hello.</s>[INST] Name a color. [/INST]"
VICUNA = "You are terse. USER: Hi! ASSISTANT: Hello.</s>USER: Name a color. ASSISTANT:"
QUESTION_ANSWER = "You are terse.\nQuestion: Hi! Answer: Hello.\nQuestion: Name a color. Answer:"
ULTRA = (
    "User: You are terse.</s>\nUser: Hi!</s>\nAssistant: Hello.</s>\n"
    "User: Name a color.</s>\nAssistant:"
)
XCOMPOSER = (
    "[UNUSED_TOKEN_146]system\nYou are terse.[UNUSED_TOKEN_145]\n"
    "[UNUSED_TOKEN_146]user\nHi![UNUSED_TOKEN_145]\n"
    "[UNUSED_TOKEN_146]assistant\nHello.[UNUSED_TOKEN_145]\n"
    "[UNUSED_TOKEN_146]user\nName a color.[UNUSED_TOKEN_145]\n"
    "[UNUSED_TOKEN_146]assistant\n"
)
PHI3 = (
    "<|system|>\nYou are terse.<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\nHello.<|end|>\n"
    "<|user|>\nName a color.<|end|>\n<|assistant|>\n"
)

GOLDEN = {
    "baichuan2": "You are terse.<reserved_106>Hi!<reserved_107>Hello.<reserved_106>Name a color."
    "<reserved_107>",
    "chatglm": "You are terse.\n\n[Round 1]\n\n问：Hi!\n\n答：Hello.\n\n[Round 2]\n\n问：Name a color."
    "\n\n答：",
    "chatglm3": "[gMASK]sop<|system|>\n You are terse.<|user|>\n Hi!<|assistant|>\n Hello."
    "<|user|>\n Name a color.<|assistant|>",
    "codegeex4": "[gMASK]<sop><|system|>\nYou are terse.<|user|>\nHi!<|assistant|>\nHello."
    "<|user|>\nName a color.<|assistant|>\n",
    "codellama": LLAMA2,
    "cogvlm": QUESTION_ANSWER,
    "cogvlm2": QUESTION_ANSWER,
    "dbrx": CHATML,
    "deepseek": "<｜begin▁of▁sentence｜>You are terse.\n\nUser: Hi!\n\nAssistant: Hello."
    "<｜end▁of▁sentence｜>User: Name a color.\n\nAssistant:",
    "deepseek-coder": "<｜begin▁of▁sentence｜>You are terse.### Instruction:\nHi!\n### Response:\n"
    "Hello.\n<|EOT|>\n### Instruction:\nName a color.\n### Response:\n",
    "deepseek-vl": "You are terse.\n\nUser: Hi!\n\nAssistant: Hello.<｜end▁of▁sentence｜>"
    "User: Name a color.\n\nAssistant:",
    "falcon": "System: You are terse.\nUser: Hi!\nFalcon: Hello.\nUser: Name a color.\nFalcon:",
    "gemma": "<bos><start_of_turn>user\nYou are terse.\n\nHi!<end_of_turn>\n"
    "<start_of_turn>model\nHello.<end_of_turn>\n"
    "<start_of_turn>user\nName a color.<end_of_turn>\n<start_of_turn>model\n",
    "glm4": "[gMASK]<sop><|system|>\nYou are terse.<|user|>\nHi!<|assistant|>\nHello."
    "<|user|>\nName a color.<|assistant|>",
    "internlm": "<|System|>:You are terse.\n<|User|>:Hi!\n<|Bot|>:Hello.<eoa>\n"
    "<|User|>:Name a color.\n<|Bot|>:",
    "internlm-xcomposer2": XCOMPOSER,
    "internlm-xcomposer2d5": XCOMPOSER,
    "internlm2": "<s>" + CHATML,
    "internvl-internlm2": CHATML,
    "internvl-phi3": "<|system|>\nYou are terse.<|end|><|user|>\nHi!<|end|><|assistant|>\nHello."
    "<|end|><|user|>\nName a color.<|end|><|assistant|>\n",
    "internvl-zh": "You are terse.\n<human>: Hi! <bot>: Hello.</s><human>: Name a color. <bot>:",
    "internvl-zh-hermes2": CHATML_DIRECT,
    "internvl2-internlm2": CHATML,
    "internvl2-phi3": PHI3,
    "llama": "You are terse.Hi!Hello.Name a color.",
    "llama2": LLAMA2,
    "llama3": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n" + LLAMA3_TAIL,
    "llama3_1": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n" + LLAMA3_TAIL,
    "llava-chatml": CHATML_DIRECT,
    "llava-v1": VICUNA,
    "mini-gemini-vicuna": VICUNA,
    "mistral": MISTRAL,
    "mixtral": MISTRAL,
    "phi-3": PHI3,
    "puyu": "You are terse.Hi!Hello.Name a color.",
    "qwen": CHATML,
    "solar": "### System:\nYou are terse.\n\n### User:\nHi!\n\n### Assistant:\nHello."
    "### User:\nName a color.\n\n### Assistant:\n",
    "ultracm": ULTRA,
    "ultralm": ULTRA,
    "vicuna": VICUNA,
    "wizardlm": VICUNA,
    "yi": CHATML,
    "yi-vl": "You are terse.\n\n### Human: Hi!\n### Assistant: Hello.\n### Human: Name a color.\n"
    "### Assistant:",
}


def test_every_listed_name_is_built_in():
    assert set(GOLDEN) <= set(template_names())


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_two_turn_chat_matches_published_format(name):
    assert get_template(name).messages2prompt(CHAT) == GOLDEN[name]

