"""ChatTemplate behaviour beyond the golden chats: defaults, follow-up turns, content parts."""

from __future__ import annotations

import pytest
from lmforge.chat_template import ChatTemplate, get_template
from lmforge.errors import ConfigError

USER = [{"role": "user", "content": "Hi!"}]


def test_default_system_prompt_is_written_when_the_chat_has_none():
    assert get_template("qwen").messages2prompt(USER) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    )
    internlm2 = get_template("internlm2").messages2prompt(USER)
    assert internlm2.startswith(
        "<s><|im_start|>system\nYou are an AI assistant whose name is InternLM (书生·浦语).\n"
    )
    assert internlm2.endswith("中文.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
                              "<|im_start|>assistant\n")


def test_family_without_default_system_prompt_writes_no_system_turn():
    assert get_template("llama3").messages2prompt(USER) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert get_template("mistral").messages2prompt(USER) == "<s>[INST] Hi! [/INST]"
    assert get_template("llama3_1").messages2prompt(USER) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_get_prompt_first_and_follow_up_turns():
    yi = get_template("yi")
    assert yi.get_prompt("Hi!") == (
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    )
    # The past reply ended with the stop word <|im_end|>; the follow-up adds what comes after.
    assert yi.get_prompt("More?", sequence_start=False) == (
        "\n<|im_start|>user\nMore?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert get_template("llama2").get_prompt("More?", sequence_start=False) == (
        "<s>[INST] More? [/INST]"
    )


def test_final_assistant_message_is_left_open_to_continue():
    messages = [*USER, {"role": "assistant", "content": "Hello, I am"}]
    assert get_template("yi").messages2prompt(messages) == (
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello, I am"
    )
    assert get_template("vicuna").messages2prompt(messages).endswith(
        "USER: Hi! ASSISTANT: Hello, I am"
    )


def test_content_as_list_of_text_parts():
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hi"},
                                          {"type": "text", "text": "there"}]}]
    assert get_template("yi").messages2prompt(parts) == (
        "<|im_start|>user\nHi\nthere<|im_end|>\n<|im_start|>assistant\n"
    )


def test_non_text_part_and_unknown_role_are_clear_errors():
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    with pytest.raises(ConfigError, match="'image_url'"):
        get_template("yi").messages2prompt(image)
    with pytest.raises(ConfigError, match="role 'tool'"):
        get_template("yi").messages2prompt([{"role": "tool", "content": "x"}])


def test_completion_capability_passes_the_prompt_through():
    qwen = get_template("qwen").replace(capability="completion")
    assert qwen.get_prompt("def f():") == "def f():"
    assert get_template("llama").get_prompt("Once upon") == "Once upon"


def test_codellama_infilling_and_python():
    infill = get_template("codellama").replace(capability="infilling", stop_words=())
    assert infill.get_prompt("def f(x):\n    <FILL>\n    return y") == (
        "<PRE> def f(x):\n     <SUF>\n    return y <MID>"
    )
    assert infill.stop_words == ("<EOT>",)
    python = get_template("codellama").replace(capability="python")
    assert python.get_prompt("import os") == "import os"
    with pytest.raises(ConfigError, match="infilling"):
        get_template("qwen").replace(capability="infilling").get_prompt("a<FILL>b")


def test_chatglm2_follow_up_turn_needs_the_conversation():
    with pytest.raises(ConfigError, match="whole conversation"):
        get_template("chatglm").get_prompt("Hi", sequence_start=False)


def test_bad_capability_is_a_clear_error():
    with pytest.raises(ConfigError, match="capability must be one of"):
        ChatTemplate(name="x", capability="poetry")
