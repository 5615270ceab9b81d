"""Reading a model's own files and picking its template from them."""

from __future__ import annotations

import json
import logging

import pytest
from lmforge.chat_template import (
    ChatTemplate,
    ChatTemplateConfig,
    JinjaChatTemplate,
    ModelFiles,
    best_match,
    build_chat_template,
    register_template,
    unregister_template,
)

CHATML_JINJA = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_JINJA = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
)
LLAMA31_JINJA = LLAMA3_JINJA + "{{ 'Cutting Knowledge Date: December 2023' }}"
LLAMA2_JINJA = "{{ bos_token + '[INST] <<SYS>>\\n' }}"


def write_model(folder, config=None, tokenizer_config=None, jinja=None):
    """A model folder with only the files that describe it (no weights are needed here)."""
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    if tokenizer_config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), "utf-8")
    if jinja is not None:
        (folder / "chat_template.jinja").write_text(jinja, encoding="utf-8")
    return folder


LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}


@pytest.mark.parametrize(
    ("config", "tokenizer_config", "expected"),
    [
        ({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"},
         {"chat_template": CHATML_JINJA}, "qwen"),
        ({**LLAMA, "_name_or_path": "lmsys/vicuna-7b-v1.5"}, {}, "vicuna"),
        (LLAMA, {"chat_template": LLAMA3_JINJA}, "llama3"),
        (LLAMA, {"chat_template": LLAMA31_JINJA}, "llama3_1"),
        (LLAMA, {"chat_template": LLAMA2_JINJA}, "llama2"),
        ({**LLAMA, "_name_or_path": "codellama/CodeLlama-7b-Instruct-hf"},
         {"chat_template": LLAMA2_JINJA}, "codellama"),
        ({"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2"},
         {"chat_template": [{"name": "default", "template": CHATML_JINJA}]}, "internlm2"),
        ({"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2"},
         {"chat_template": "<start_of_turn>"}, "gemma"),
        ({"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text"},
         {"chat_template": "<start_of_turn>"}, "gemma"),
        ({"architectures": ["Phi3ForCausalLM"], "model_type": "phi3"},
         {"chat_template": "<|user|>"}, "phi-3"),
        ({"architectures": ["MistralForCausalLM"], "model_type": "mistral"},
         {"chat_template": "[INST]"}, "mistral"),
        ({"architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
          "_name_or_path": "OpenGVLab/InternVL2-4B"}, {}, "internvl2-phi3"),
        (LLAMA, {}, "llama"),
    ],
)
def test_model_files_pick_the_family(tmp_path, config, tokenizer_config, expected):
    folder = write_model(tmp_path / "model", config, tokenizer_config)
    assert build_chat_template(folder).name == expected


@pytest.mark.parametrize("config", [
    {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
     "_name_or_path": "Qwen/Qwen3-8B"},
    {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe",
     "_name_or_path": "Qwen/Qwen3-30B-A3B"},
])
def test_qwen3_uses_its_own_template(tmp_path, config):
    """Qwen3 is not Qwen2's ChatML with a default system prompt: its own template is used."""
    folder = write_model(tmp_path / "m", config, {"chat_template": CHATML_JINJA})
    template = build_chat_template(folder)
    assert isinstance(template, JinjaChatTemplate)
    assert template.messages2prompt([{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_mixtral_instruct_writes_inst_turns(tmp_path):
    config = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
              "_name_or_path": "mistralai/Mixtral-8x7B-Instruct-v0.1"}
    template = build_chat_template(write_model(tmp_path / "m", config, {"chat_template": "[INST]"}))
    assert template.messages2prompt([{"role": "user", "content": "Hi"}]) == "<s>[INST] Hi [/INST]"


def test_chat_template_jinja_file_is_read(tmp_path):
    folder = write_model(tmp_path / "m", LLAMA, {"bos_token": "<s>"}, jinja=LLAMA3_JINJA)
    files = ModelFiles.from_path(folder)
    assert files.chat_template == LLAMA3_JINJA
    assert files.bos_token == "<s>"
    assert files.names == ("m",)  # the folder name only when the files name nothing
    assert build_chat_template(folder).name == "llama3"


def test_unknown_family_with_its_own_template_uses_jinja(tmp_path):
    folder = write_model(
        tmp_path / "m", {**LLAMA, "_name_or_path": "acme/helper-1b"},
        {"chat_template": CHATML_JINJA, "eos_token": {"content": "<|im_end|>"}},
    )
    template = build_chat_template(folder)
    assert isinstance(template, JinjaChatTemplate)
    assert template.stop_words == ("<|im_end|>",)
    assert template.messages2prompt([{"role": "user", "content": "Hi!"}]) == (
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    )


def test_tokenizer_template_argument_is_used_when_files_have_none(tmp_path):
    folder = write_model(tmp_path / "m", {**LLAMA, "_name_or_path": "acme/helper-1b"})
    template = build_chat_template(folder, tokenizer_chat_template=CHATML_JINJA)
    assert isinstance(template, JinjaChatTemplate)


def test_nothing_known_falls_back_to_plain_with_a_warning(tmp_path, caplog):
    folder = write_model(tmp_path / "m", {"model_type": "acme"})
    with caplog.at_level(logging.WARNING):
        template = build_chat_template(folder)
    assert template.capability == "completion"
    assert template.messages2prompt([{"role": "user", "content": "Hi"}]) == "Hi"
    assert "no chat template matches" in caplog.text


def test_explicit_config_wins(tmp_path):
    folder = write_model(tmp_path / "m", LLAMA, {"chat_template": LLAMA3_JINJA})
    assert build_chat_template(folder, ChatTemplateConfig(model_name="vicuna")).name == "vicuna"


def test_hub_id_not_on_disk_matches_by_name():
    assert build_chat_template("internlm/internlm2-chat-7b").name == "internlm2"
    assert build_chat_template("Qwen/Qwen1.5-7B-Chat").name == "qwen"


def test_higher_priority_wins_whatever_the_registration_order():
    files = ModelFiles(path="x", names=("acme/model",))
    specific = ChatTemplate(name="aaa-specific", priority=5, matcher=lambda f: True)
    generic = ChatTemplate(name="zzz-generic", priority=1, matcher=lambda f: True)
    for first, second in ((specific, generic), (generic, specific)):
        register_template(first)
        register_template(second)
        try:
            assert best_match(files) is specific
        finally:
            unregister_template(first.name)
            unregister_template(second.name)
    assert build_chat_template("liuhaotian/llava-v1.5-7b").name == "llava-v1"
