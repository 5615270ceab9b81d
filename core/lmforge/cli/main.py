"""The ``lmforge`` console script."""

from __future__ import annotations

import os
import sys

from .console import DEFAULT_LOG_LEVEL, LOG_LEVEL_ENV, LOG_LEVELS, configure_logging


def _early_log_level(argv: list[str]) -> str:
    """The log level asked for, read before the CLI exists so plugin loading honours it too."""
    level = os.environ.get(LOG_LEVEL_ENV, DEFAULT_LOG_LEVEL)
    args = iter(argv)
    for arg in args:
        if arg == "--log-level":
            level = next(args, level)
        elif arg.startswith("--log-level="):
            level = arg.partition("=")[2]
        elif not arg.startswith("-"):
            break  # the command's name: what follows are its own options, not global ones
    level = level.upper()
    return level if level in LOG_LEVELS else DEFAULT_LOG_LEVEL


def main(argv: list[str] | None = None) -> None:
    """Run the ``lmforge`` command line with ``argv`` (default: ``sys.argv[1:]``)."""
    from .app import create_app

    args = sys.argv[1:] if argv is None else list(argv)
    configure_logging(_early_log_level(args))
    create_app()(args=args, prog_name="lmforge")


if __name__ == "__main__":
    main()
