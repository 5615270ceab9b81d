"""docs/plugins.md documents every hook in lmforge.hookspecs with its exact signature."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from lmforge import hookspecs

DOC = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
HEADING = re.compile(r"^### `(?P<name>\w+)\((?P<args>[^)]*)\)`$", re.MULTILINE)


def _documented() -> dict[str, list[str]]:
    return {
        m["name"]: [a.strip() for a in m["args"].split(",") if a.strip()]
        for m in HEADING.finditer(DOC.read_text(encoding="utf-8"))
    }


def _specified() -> dict[str, list[str]]:
    return {
        name: list(inspect.signature(fn).parameters)
        for name, fn in vars(hookspecs).items()
        if callable(fn) and hasattr(fn, "lmforge_spec")
    }


def test_every_hook_is_specified_and_documented():
    assert _specified(), "no hook specs found: the marker attribute changed?"
    assert set(_documented()) == set(_specified())


def test_documented_signatures_match_the_specs():
    documented = _documented()
    for name, args in _specified().items():
        assert documented[name] == args, f"docs/plugins.md shows {name}({', '.join(documented[name])})"


def test_hook_headings_are_the_only_level_three_headings_in_the_hook_section():
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Hooks", 1)[1].split("\n## ", 1)[0]
    headings = re.findall(r"^### .*$", section, re.MULTILINE)
    assert len(headings) == len(_specified()), headings
