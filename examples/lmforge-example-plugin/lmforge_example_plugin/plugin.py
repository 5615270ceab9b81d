"""The hook implementations lmforge calls (named by this distribution's entry point).

Only cheap imports at module level: lmforge imports this module every time its CLI starts.
"""

from __future__ import annotations

import typer
from lmforge import hookimpl


@hookimpl
def register_chat_templates(register):
    from .template import ALPACA

    register(ALPACA)


@hookimpl
def register_commands(app: typer.Typer) -> None:
    @app.command()
    def hello(name: str = typer.Option("world", help="Who to greet.")) -> None:
        """Say hello from the example plugin."""
        typer.echo(f"Hello, {name}!")
