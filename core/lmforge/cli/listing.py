"""``lmforge list``: chat template names, then what the installed plugins provide."""

from __future__ import annotations

import typer

from .. import registry
from ..plugins import DISABLED, LOADED, plugin_infos
from .command import LmforgeCommand
from .console import console, err_console

TEMPLATES_DISTRIBUTION = "lmforge-templates"


def _templates_problem() -> str:
    """Why the built-in chat templates are missing, in one sentence, or "" when they are there."""
    info = next((i for i in plugin_infos() if i.distribution == TEMPLATES_DISTRIBUTION), None)
    if info is None:
        return (
            "The built-in chat templates are not installed; install them with "
            f"`pip install {TEMPLATES_DISTRIBUTION}`."
        )
    if info.status == DISABLED:
        return f"The built-in chat templates are disabled: add {info.name!r} to LMFORGE_LOAD_PLUGINS."
    if info.status != LOADED:
        return f"The built-in chat templates failed to load ({info.error}); see `lmforge plugins`."
    return ""


def _section(title: str, rows: list[tuple[str, str]]) -> None:
    console.print()
    console.print(f"[bold]{title}:[/]")
    if not rows:
        console.print("  (none installed)")
        return
    width = max(len(name) for name, _ in rows)
    for name, detail in rows:
        console.print(f"  {name:<{width}}  {detail}".rstrip(), markup=False, soft_wrap=True)


def _from(plugin: str) -> str:
    return f"[{plugin}]" if plugin else ""


def list_command() -> None:
    """List the supported chat template names, engines, quantizers and model architectures."""
    templates = registry.chat_templates()
    # Template names come one per line, as LMDeploy prints them, so scripts can read them.
    typer.echo("The supported chat template names are:")
    for name in templates:
        typer.echo(name)
    problem = _templates_problem()
    if problem:  # on stderr, so that stdout stays a clean list
        err_console.print(problem, style="yellow", markup=False, soft_wrap=True)
    _section("Engines", [
        (s.name, " ".join(filter(None, (s.description, _from(s.plugin)))))
        for s in registry.engines().values()
    ])
    _section("Quantizers", [
        (s.name, " ".join(filter(None, (
            f"`lmforge lite {s.command}` writes {s.format}",
            f"for {', '.join(s.engines)}" if s.engines else "",
            _from(s.plugin),
        ))))
        for s in registry.quantizers().values()
    ])
    _section("Model architectures", [
        (s.architecture, " ".join(filter(None, (
            f"engines: {', '.join(registry.engines_for(s.architecture)) or 'none installed'}",
            _from(s.plugin),
        ))))
        for s in registry.models().values()
    ])


def register(app: typer.Typer) -> None:
    """Add ``lmforge list``."""
    app.command("list", cls=LmforgeCommand)(list_command)
