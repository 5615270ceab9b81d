"""The root ``lmforge`` command: global options, built-in commands and plugin commands.

A module that adds commands defines ``register(app: typer.Typer) -> None`` and is named in
:data:`COMMAND_MODULES`. Command modules import heavy libraries (torch, transformers) inside
their command functions, never at module level, so that ``lmforge --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click
import typer

from ..errors import LmforgeError
from ..version import __version__
from .command import HelpGroup
from .console import (
    DEFAULT_LOG_LEVEL,
    LOG_LEVEL_ENV,
    LogLevel,
    configure_logging,
    exit_with_error,
)

logger = logging.getLogger(__name__)

# Listed in the order ``lmforge --help`` shows them. A module that is not part of this
# installation is skipped, so commands can land one at a time.
COMMAND_MODULES: tuple[str, ...] = (
    "lmforge.cli.chat",
    "lmforge.cli.lite",
    "lmforge.cli.serve",
    "lmforge.cli.bench",
    "lmforge.cli.listing",
    "lmforge.cli.check_env",
    "lmforge.cli.plugin_status",
)

HELP = "Compress, run and serve large language models."


class LmforgeGroup(HelpGroup):
    """Root group that turns every :class:`LmforgeError` into one red sentence and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LmforgeError as exc:
            exit_with_error(str(exc))


def _show_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", "-v", callback=_show_version, is_eager=True,
        help="Show the version and exit.",
    ),
    log_level: LogLevel = typer.Option(
        DEFAULT_LOG_LEVEL, "--log-level", envvar=LOG_LEVEL_ENV, case_sensitive=False,
        help="Log level for lmforge's messages.",
    ),
) -> None:
    configure_logging(log_level.value)
    if ctx.invoked_subcommand is None:  # a bare `lmforge` shows the help, as LMDeploy does
        help_text = ctx.get_help()  # rich help prints itself and returns ""
        if help_text:
            typer.echo(help_text)
        raise typer.Exit()


def _add_module_commands(app: typer.Typer, module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            logger.debug("command module %s is not installed", module_name)
            return
        raise
    module.register(app)


def _add_commands_tolerantly(app: typer.Typer, module_name: str) -> None:
    # One broken command module (a missing optional dependency, say) must not take the
    # other commands down with it.
    try:
        _add_module_commands(app, module_name)
    except Exception as exc:
        logger.warning("commands of %s are unavailable: %s: %s", module_name,
                       type(exc).__name__, exc)


def create_app() -> typer.Typer:
    """Build the ``lmforge`` application with its own commands and every plugin's commands.

    Each call returns a new application, so plugin changes (tests, embedding) take effect on the
    next build. A plugin whose ``register_commands`` raises is reported by ``lmforge plugins``
    and left out; the other commands still work.
    """
    from ..plugins import call_hook

    app = typer.Typer(
        name="lmforge",
        help=HELP,
        cls=LmforgeGroup,
        invoke_without_command=True,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
        pretty_exceptions_show_locals=False,
    )
    app.callback()(_root)
    for module_name in COMMAND_MODULES:
        _add_commands_tolerantly(app, module_name)
    call_hook("register_commands", app=app)
    return app
