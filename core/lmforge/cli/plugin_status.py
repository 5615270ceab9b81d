"""``lmforge plugins``: every discovered plugin with its version, load status and error."""

from __future__ import annotations

import json
from dataclasses import asdict

import typer
from rich.table import Table

from ..plugins import FAILED, LOADED, plugin_infos
from .command import LmforgeCommand
from .console import console

_STATUS_STYLE = {LOADED: "green", FAILED: "red"}


def plugins_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
) -> None:
    """List the discovered plugins: name, distribution, version, status and error."""
    infos = plugin_infos()
    if as_json:
        typer.echo(json.dumps([asdict(info) for info in infos], indent=2))
        return
    table = Table("name", "distribution", "version", "status", "error")
    for info in infos:
        style = _STATUS_STYLE.get(info.status, "yellow")
        table.add_row(
            info.name, info.distribution, info.version, f"[{style}]{info.status}[/]", info.error
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add ``lmforge plugins``."""
    app.command("plugins", cls=LmforgeCommand)(plugins_command)
