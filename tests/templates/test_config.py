"""ChatTemplateConfig: overriding a built-in, defining a new template, reading JSON."""

from __future__ import annotations

import json

import pytest
from lmforge import plugins
from lmforge.chat_template import (
    ChatTemplateConfig,
    get_template,
    template_names,
    unregister_template,
)
from lmforge.errors import ConfigError

USER = [{"role": "user", "content": "Hi!"}]

# The JSON example of LMDeploy's chat template documentation.
CUSTOM = {
    "model_name": "lmforge-test-robot",
    "system": "<|im_start|>system\n",
    "meta_instruction": "You are a robot developed by LMDeploy.",
    "eosys": "<|im_end|>\n",
    "user": "<|im_start|>user\n",
    "eoh": "<|im_end|>\n",
    "assistant": "<|im_start|>assistant\n",
    "eoa": "<|im_end|>",
    "separator": "\n",
    "capability": "chat",
    "stop_words": ["<|im_end|>"],
}
CUSTOM_PROMPT = (
    "<|im_start|>system\nYou are a robot developed by LMDeploy.<|im_end|>\n"
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
)


@pytest.fixture
def custom_name():
    yield CUSTOM["model_name"]
    unregister_template(CUSTOM["model_name"])


def test_known_name_overrides_only_given_fields():
    template = ChatTemplateConfig(model_name="qwen", meta_instruction="Be brief.").chat_template
    assert template.messages2prompt(USER) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert template.stop_words == get_template("qwen").stop_words
    # The built-in itself is unchanged.
    assert "You are a helpful assistant." in get_template("qwen").get_prompt("Hi!")


def test_new_name_builds_and_registers_a_template(custom_name):
    template = ChatTemplateConfig(**CUSTOM).chat_template
    assert template.messages2prompt(USER) == CUSTOM_PROMPT
    assert template.stop_words == ("<|im_end|>",)
    assert custom_name in template_names()
    assert get_template(custom_name).get_prompt("Hi!") == CUSTOM_PROMPT


def test_from_json_file_and_string(tmp_path, custom_name):
    path = tmp_path / "template.json"
    path.write_text(json.dumps(CUSTOM), encoding="utf-8")
    from_file = ChatTemplateConfig.from_json(str(path))
    from_string = ChatTemplateConfig.from_json(json.dumps(CUSTOM))
    assert from_file == from_string == ChatTemplateConfig(**CUSTOM)
    assert from_file.chat_template.get_prompt("Hi!") == CUSTOM_PROMPT
    assert ChatTemplateConfig.from_json(from_file.to_json()) == from_file


def test_malformed_json_is_one_clear_sentence(tmp_path):
    with pytest.raises(ConfigError, match=r"is not valid JSON: .* line 1 column"):
        ChatTemplateConfig.from_json('{"model_name": "qwen",}')
    bad = tmp_path / "bad.json"
    bad.write_text("{model_name: qwen}", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.json is not valid JSON"):
        ChatTemplateConfig.from_json(str(bad))


def test_json_problems_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="unknown field.*stop_word_suffix"):
        ChatTemplateConfig.from_json('{"model_name": "qwen", "stop_word_suffix": "x"}')
    with pytest.raises(ConfigError, match="'model_name'"):
        ChatTemplateConfig.from_json('{"system": "x"}')
    with pytest.raises(ConfigError, match="capability must be one of"):
        ChatTemplateConfig.from_json('{"model_name": "qwen", "capability": "poetry"}')
    with pytest.raises(ConfigError, match="stop_words must be a list of strings"):
        ChatTemplateConfig.from_json('{"model_name": "qwen", "stop_words": "<|im_end|>"}')
    with pytest.raises(ConfigError, match="neither a JSON file nor a JSON object"):
        ChatTemplateConfig.from_json(str(tmp_path / "missing.json"))


def test_unknown_template_name_says_where_to_look():
    with pytest.raises(ConfigError, match=r"'no-such-template' is unknown; `lmforge list` shows "):
        get_template("no-such-template")
    with pytest.raises(ConfigError, match=r"'qwen2' is unknown; did you mean qwen\?"):
        get_template("qwen2")


def test_unknown_name_without_the_plugin_says_to_install_it(monkeypatch):
    monkeypatch.setenv(plugins.ALLOW_ENV, "")
    plugins.reset()
    try:
        with pytest.raises(ConfigError, match=r"pip install lmforge-templates"):
            get_template("qwen")
    finally:
        monkeypatch.delenv(plugins.ALLOW_ENV)
        plugins.reset()
    assert get_template("qwen").name == "qwen"
