"""The example plugin, installed for real with pip: its template and command appear, and the CLI
works again once it is uninstalled."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lmforge-example-plugin"
DISTRIBUTION = "lmforge-example-plugin"
BIN = Path(sys.executable).parent
RENDER = (
    "from lmforge.chat_template import get_template; "
    "print(get_template('example-alpaca').messages2prompt([{'role': 'user', 'content': 'Hi'}]), end='')"
)
EXPECTED_PROMPT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\nHi\n\n### Response:\n"
)


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=180)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _lmforge(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(str(BIN / "lmforge"), *args, check=check)


def _pip(*args: str) -> None:
    _run(sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args)


def _template_names(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    return lines[1:lines.index("")]


@pytest.fixture
def installed(tmp_path):
    # Build from a copy, so the source tree gets no build/ or egg-info folders.
    source = tmp_path / "lmforge-example-plugin"
    shutil.copytree(EXAMPLE, source)
    _pip("install", "--no-deps", "--no-build-isolation", str(source))
    try:
        yield
    finally:
        _pip("uninstall", "-y", DISTRIBUTION)  # a no-op when the test uninstalled it already


def test_example_plugin_install_use_and_uninstall(installed):
    assert "example-alpaca" in _template_names(_lmforge("list").stdout)
    assert " hello " in _lmforge("--help").stdout
    assert _lmforge("hello", "--name", "Ada").stdout == "Hello, Ada!\n"
    rows = {row["name"]: row for row in json.loads(_lmforge("plugins", "--json").stdout)}
    assert rows["example"]["distribution"] == DISTRIBUTION
    assert rows["example"]["status"] == "loaded"
    assert _run(sys.executable, "-c", RENDER).stdout == EXPECTED_PROMPT

    _pip("uninstall", "-y", DISTRIBUTION)
    listed = _lmforge("list")
    assert "example-alpaca" not in _template_names(listed.stdout)
    assert " hello " not in _lmforge("--help").stdout
    missing = _lmforge("hello", check=False)
    assert missing.returncode == 2
    assert "No such command 'hello'" in missing.stderr
    assert "example" not in {row["name"] for row in json.loads(_lmforge("plugins", "--json").stdout)}
