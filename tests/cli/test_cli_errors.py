"""Every LmforgeError a command raises prints as one red sentence, exit code 1, no traceback."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import typer
from lmforge import hookimpl, plugins
from lmforge.errors import ConfigError, ModelLoadError

MESSAGE = "Model path '/models/none' does not exist; pass a local folder or a hub model id."


class _Failing:
    @staticmethod
    @hookimpl
    def register_commands(app):
        @app.command("fail")
        def fail() -> None:
            raise ModelLoadError(MESSAGE)

        group = typer.Typer()

        @group.command("deep")
        def deep() -> None:
            raise ConfigError("--tp must be a power of two, got 3.")

        app.add_typer(group, name="nested")


@pytest.fixture
def failing_plugin(no_installed_plugins):
    plugins.register_plugin(_Failing, name="failing")


def test_lmforge_error_prints_one_sentence_and_exits_1(cli, failing_plugin):
    result = cli("fail")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == f"Error: {MESSAGE}\n"


def test_lmforge_error_in_a_sub_command_group(cli, failing_plugin):
    result = cli("nested", "deep")
    assert result.exit_code == 1
    assert result.stderr == "Error: --tp must be a power of two, got 3.\n"


def test_real_process_has_no_traceback(tmp_path):
    # A plugin installed as a module plus dist-info, seen by a fresh interpreter.
    (tmp_path / "failing_cli_plugin.py").write_text(textwrap.dedent(f"""
        from lmforge import hookimpl
        from lmforge.errors import ModelLoadError

        @hookimpl
        def register_commands(app):
            @app.command("fail")
            def fail() -> None:
                raise ModelLoadError({MESSAGE!r})
    """))
    info = tmp_path / "failing_cli_plugin-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: failing-cli-plugin\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[lmforge]\nfailing = failing_cli_plugin\n")
    done = subprocess.run(
        [sys.executable, "-m", "lmforge.cli.main", "fail"], capture_output=True, text=True,
        timeout=60, env={"PYTHONPATH": str(tmp_path), "COLUMNS": "300", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert done.stderr == f"Error: {MESSAGE}\n"


def test_a_broken_command_module_leaves_the_other_commands_working(cli, tmp_path, monkeypatch, caplog):
    from lmforge.cli import app as app_module

    (tmp_path / "broken_cli_commands.py").write_text('raise RuntimeError("fastapi is too old")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        app_module, "COMMAND_MODULES",
        ("broken_cli_commands", "lmforge.cli.not_written_yet", "lmforge.cli.listing"),
    )
    with caplog.at_level(logging.WARNING, logger="lmforge"):
        result = cli("list")
    assert result.exit_code == 0
    assert "The supported chat template names are:" in result.stdout
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "commands of broken_cli_commands are unavailable: RuntimeError: fastapi is too old"
    ]
