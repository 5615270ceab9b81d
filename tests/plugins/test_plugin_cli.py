"""A broken or misbehaving plugin never takes the CLI down, and the CLI names it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lmforge import hookimpl, plugins
from lmforge.cli.app import create_app
from typer.testing import CliRunner

runner = CliRunner()
BROKEN_IMPORT_ERROR = "needs libbroken.so, which is not installed"  # as conftest writes it
LMFORGE = str(Path(sys.executable).with_name("lmforge"))


def _invoke(*args: str):
    result = runner.invoke(create_app(), list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_broken_plugin_is_named_by_plugins_and_check_env_and_list_still_works(fake_site):
    fake_site.add_broken_plugin("lmforge-broken", "broken_plugin")
    fake_site.add_template_plugin("lmforge-alpha", "alpha_plugin", "alpha-chat")

    listed = _invoke("list")
    assert listed.exit_code == 0
    assert "alpha-chat" in listed.stdout.splitlines()

    status = _invoke("plugins", "--json")
    assert status.exit_code == 0
    broken = {p["name"]: p for p in json.loads(status.stdout)}["broken_plugin"]
    assert broken["distribution"] == "lmforge-broken"
    assert broken["status"] == "failed"
    assert broken["error"] == f"ImportError: {BROKEN_IMPORT_ERROR}"

    env = _invoke("check_env")
    assert env.exit_code == 0
    assert f"broken_plugin (lmforge-broken 0.1.0): failed: ImportError: {BROKEN_IMPORT_ERROR}" in env.stdout


def test_broken_plugin_in_a_real_process(fake_site):
    fake_site.add_broken_plugin("lmforge-broken", "broken_plugin")
    env = {**os.environ, "PYTHONPATH": str(fake_site.path), "COLUMNS": "200"}
    listed = subprocess.run([LMFORGE, "list"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "The supported chat template names are:" in listed.stdout
    assert "Traceback" not in listed.stderr
    # One warning line on stderr says which plugin failed and where to look.
    assert "plugin 'broken_plugin' failed to load" in listed.stderr

    status = subprocess.run(
        [LMFORGE, "--log-level", "ERROR", "plugins"], env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert status.stderr == ""  # --log-level ERROR silences the load warning
    row = next(line for line in status.stdout.splitlines() if "broken_plugin" in line)
    assert "failed" in row and "libbroken.so" in row


class _Hello:
    @staticmethod
    @hookimpl
    def register_commands(app):
        @app.command()
        def hello() -> None:
            """Say hello."""
            print("hello from a plugin")


class _RaisingCommands:
    @staticmethod
    @hookimpl
    def register_commands(app):
        raise RuntimeError("cannot build my commands")


def test_plugin_commands_appear_and_a_raising_plugin_is_left_out(no_installed_plugins):
    plugins.register_plugin(_RaisingCommands, name="raising")
    plugins.register_plugin(_Hello, name="hello")
    help_text = _invoke("--help").stdout
    assert "hello" in help_text
    assert _invoke("hello").stdout == "hello from a plugin\n"
    assert _invoke("list").exit_code == 0
    raising = {p["name"]: p for p in json.loads(_invoke("plugins", "--json").stdout)}["raising"]
    assert raising["status"] == "failed"
    assert raising["error"] == "register_commands: RuntimeError: cannot build my commands"
