"""Terminal output shared by every command: consoles, one-sentence errors and log setup."""

from __future__ import annotations

import logging
import sys
from enum import Enum
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape


class LogLevel(str, Enum):
    """The ``--log-level`` choices."""

    CRITICAL = "CRITICAL"
    ERROR = "ERROR"
    WARNING = "WARNING"
    INFO = "INFO"
    DEBUG = "DEBUG"


LOG_LEVELS = tuple(level.value for level in LogLevel)
LOG_LEVEL_ENV = "LMFORGE_LOG_LEVEL"
DEFAULT_LOG_LEVEL = "WARNING"

# Neither console binds a stream: rich resolves sys.stdout/sys.stderr at print time, which keeps
# output capture (tests, pipes) working.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_error(message: str) -> None:
    """Print ``message`` as one red line on stderr."""
    err_console.print(f"[bold red]Error:[/] [red]{escape(message)}[/]", soft_wrap=True)


def exit_with_error(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` as one red line on stderr and exit with ``code``, without a traceback."""
    print_error(message)
    raise typer.Exit(code)


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a record arrives (it may be swapped)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def configure_logging(level: str) -> None:
    """Send lmforge's log records at ``level`` and above to stderr."""
    logger = logging.getLogger("lmforge")
    logger.setLevel(level.upper())
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
