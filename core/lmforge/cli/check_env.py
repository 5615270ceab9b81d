"""``lmforge check_env``: print the environment report, or dump it to JSON or YAML."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import typer

from ..errors import ConfigError
from .command import LmforgeCommand
from .console import console, exit_with_error

DUMP_FORMATS = {".json": "json", ".yml": "yaml", ".yaml": "yaml", ".pkl": "pickle"}


def _print_report(report: dict[str, Any]) -> None:
    sections = {}
    for key, value in report.items():
        if key in ("packages", "plugins"):
            continue
        if isinstance(value, dict):  # a plugin's section (register_env_info), printed last
            sections[key] = value
            continue
        console.print(f"{key}: {value}", markup=False, soft_wrap=True)
    for name, ver in report["packages"].items():
        console.print(f"{name}: {ver}", markup=False)
    for title, info in sections.items():
        console.print(f"{title}:")
        for field, value in info.items():
            console.print(f"  {field}: {value}", markup=False, soft_wrap=True)
    console.print("Plugins:")
    for p in report["plugins"]:
        dist = " ".join(filter(None, (p["distribution"], p["version"])))
        line = f"  {p['name']}" + (f" ({dist})" if dist else "") + f": {p['status']}"
        console.print(line + (f": {p['error']}" if p["error"] else ""), markup=False, soft_wrap=True)


def _to_yaml(report: dict[str, Any]) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        """Writes multi-line strings (the torch build details) as readable literal blocks."""

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, represent_str)
    return yaml.dump(report, Dumper=Dumper, sort_keys=False, allow_unicode=True)


def _dump(report: dict[str, Any], path: Path) -> None:
    kind = DUMP_FORMATS[path.suffix.lower()]
    if kind == "json":
        data = json.dumps(report, indent=2).encode()
    elif kind == "yaml":
        data = _to_yaml(report).encode()
    else:  # LMDeploy's third format: the report dict, pickled
        data = pickle.dumps(report)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"Cannot write --dump-file {str(path)!r}: {exc.strerror or exc}.") from exc


def check_env(
    dump_file: Path | None = typer.Option(
        None, "--dump-file", metavar="FILE",
        help="Also save the report to this file: .json, .yml, .yaml or .pkl.",
    ),
) -> None:
    """Check the environmental information."""
    if dump_file is not None and dump_file.suffix.lower() not in DUMP_FORMATS:
        # A bad argument, so the usage-error code 2; checked before the slow report is made.
        exit_with_error(
            f"--dump-file must end in {', '.join(DUMP_FORMATS)}; got {str(dump_file)!r}.", code=2
        )
    from .envinfo import collect_env

    report = collect_env()
    _print_report(report)
    if dump_file is not None:
        _dump(report, dump_file)
        console.print(f"Saved the report to {dump_file}", markup=False)


def register(app: typer.Typer) -> None:
    """Add ``lmforge check_env``."""
    app.command("check_env", cls=LmforgeCommand)(check_env)
