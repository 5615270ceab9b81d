"""Jinja chat templates, and the demo model's own template read from its GGUF file."""

from __future__ import annotations

import pytest
from lmforge.chat_template import JinjaChatTemplate, ModelFiles, build_chat_template
from lmforge.errors import ConfigError

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": [{"type": "text", "text": "Name a color."}]},
]

STRICT = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "[{{ m['role'] }}]{{ m['content'] | tojson }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]{% endif %}"
)


def test_jinja_gets_tokens_and_generation_prompt():
    template = JinjaChatTemplate(source=STRICT, bos_token="<s>", eos_token="</s>")
    assert template.messages2prompt([{"role": "user", "content": "é<b>"}]) == (
        '<s>[user]"é<b>"</s>\n[assistant]'
    )
    assert template.stop_words == ("</s>",)


def test_raise_exception_becomes_a_config_error():
    template = JinjaChatTemplate(source=STRICT)
    with pytest.raises(ConfigError, match="System role not supported"):
        template.messages2prompt([{"role": "system", "content": "x"}])


def test_template_cannot_reach_python_internals():
    template = JinjaChatTemplate(source="{{ messages.__class__.__mro__ }}")
    with pytest.raises(ConfigError):
        template.messages2prompt([{"role": "user", "content": "x"}])


def test_broken_template_is_a_config_error():
    with pytest.raises(ConfigError, match="does not parse"):
        JinjaChatTemplate(source="{% for %}").messages2prompt([{"role": "user", "content": "x"}])


@pytest.fixture(scope="session")
def smollm2_files(smollm2_gguf) -> ModelFiles:
    return ModelFiles.from_path(smollm2_gguf)


def test_model_files_from_the_demo_gguf(smollm2_files, smollm2_gguf):
    assert smollm2_files.path == str(smollm2_gguf)
    assert smollm2_files.model_type == "llama"
    assert smollm2_files.names[0] == "Smollm2 135M 8k Lc100K Mix1 Ep2"
    assert "smollm2" in smollm2_files.names
    assert smollm2_files.template_has("<|im_start|>", "named SmolLM")
    assert smollm2_files.eos_token == "<|im_end|>"


def test_follow_up_turn_from_a_jinja_template(smollm2_files):
    template = JinjaChatTemplate(source=smollm2_files.chat_template,
                                 eos_token=smollm2_files.eos_token)
    assert template.get_prompt("More?", sequence_start=False) == (
        "\n<|im_start|>user\nMore?<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.slow
def test_demo_model_template_equals_transformers(smollm2_gguf, smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    template = build_chat_template(smollm2_gguf)
    assert isinstance(template, JinjaChatTemplate)
    for messages in (CHAT, CHAT[1:2], CHAT[1:3]):
        plain = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
                  else m["content"][0]["text"]} for m in messages]
        continue_final = plain[-1]["role"] == "assistant"
        expected = tokenizer.apply_chat_template(
            plain, tokenize=False, add_generation_prompt=not continue_final,
            continue_final_message=continue_final,
        )
        assert template.messages2prompt(messages) == expected, messages
