"""Every command's ``--help`` reads well in an 80-column terminal."""

from __future__ import annotations

import re

import pytest
from lmforge.cli.app import create_app
from typer.main import get_command
from typer.testing import CliRunner


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(get_command(create_app())))


def _help(path) -> str:
    result = CliRunner().invoke(create_app(), [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "lmforge" for p, _ in COMMANDS])
def test_help_fits_80_columns_and_names_every_option(path, command):
    text = _help(path)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    assert "…" not in text  # nothing cut off
    assert not re.search(r"\{[a-z_]+\}", text)  # no {api_server_url}-style braces
    assert "W2" not in text  # benchmark jargon
    for param in command.params:
        if param.param_type_name != "option" or getattr(param, "hidden", False):
            continue
        name = next(o for o in param.opts if o.startswith("--"))
        rows = [line for line in lines if re.match(rf"  (-\w, )?{re.escape(name)}(\s|$)", line)]
        assert len(rows) == 1, f"{name} has no row of its own:\n{text}"
        if getattr(param, "is_flag", False):  # an on/off flag takes no value placeholder
            assert re.match(rf"  (-\w, )?{re.escape(name)}(\s{{2,}}|$)", rows[0]), rows[0]
        for alias in [o for o in [*param.opts, *param.secondary_opts] if o.startswith("--")][1:]:
            assert not any(re.match(rf"  {re.escape(alias)}\s", line) for line in lines)
            assert f"Also {alias}" in " ".join(text.split()), alias


def test_choices_are_listed_and_aliases_are_mentioned_once():
    text = _help(["serve", "api_server"])
    assert re.search(r"^  --quant-policy \{0,4,8\} ", text, re.MULTILINE)
    assert re.search(r"^  --dtype \{auto,float16,bfloat16,float32\}$", text, re.MULTILINE)
    assert re.search(r"^  --log-level \{critical,fatal,error,warn,warning,info,debug,notset\}$",
                     text, re.MULTILINE)
    assert re.search(r"^  --api-keys KEY \[KEY \.\.\.\] ", text, re.MULTILINE)
    flat = " ".join(text.split())
    for alias in ("--port", "--host", "--max-model-len", "--gpu-memory-utilization"):
        assert flat.count(alias) == 1, alias


def test_descriptions_are_reflowed_not_cut_mid_sentence():
    text = _help(["chat"])
    description = text.split("Arguments:")[0]
    flat = " ".join(description.split())
    assert "With standard input piped in, each line is one message" in flat
    body = [line for line in description.splitlines()[1:] if line.strip()]
    # Lines are filled: a line ends early only where its paragraph ends.
    assert all(len(a) + len(b.split()[0]) + 1 > 80 or a.endswith(".") for a, b in
               zip(body, body[1:], strict=False))
