"""CLI test fixtures: a CliRunner over a freshly built app, with plugin state reset around it."""

from __future__ import annotations

import pytest
from lmforge import plugins
from lmforge.cli.app import create_app
from typer.testing import CliRunner


@pytest.fixture(autouse=True)
def fresh_plugins():
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def no_installed_plugins(monkeypatch):
    """Only lmforge's built-ins and what the test registers itself."""
    monkeypatch.setenv(plugins.ALLOW_ENV, "")
    plugins.reset()


@pytest.fixture
def cli():
    """``cli("list")`` runs ``lmforge list`` in-process and returns the click Result."""
    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(create_app(), list(args), env={"COLUMNS": "200"})
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return invoke
