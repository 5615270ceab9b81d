"""Fixtures for plugin tests: no installed plugins, and fake installed distributions."""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from lmforge import plugins

BROKEN_IMPORT_ERROR = "needs libbroken.so, which is not installed"

_TEMPLATE_PLUGIN = """
    from lmforge import hookimpl

    class Template:
        name = {name!r}

    @hookimpl
    def register_chat_templates(register):
        register(Template())
"""


@pytest.fixture
def no_installed_plugins(monkeypatch):
    """Only lmforge's built-ins and what the test registers itself."""
    monkeypatch.setenv(plugins.ALLOW_ENV, "")
    plugins.reset()
    yield
    plugins.reset()


@dataclass
class FakeSite:
    """A sys.path folder holding plugin modules and the ``*.dist-info`` that installs them."""

    path: Path
    modules: list[str] = field(default_factory=list)

    def add(self, dist: str, module: str, source: str, entry_point: str = "") -> None:
        (self.path / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        info = self.path / f"{dist.replace('-', '_')}-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n", encoding="utf-8"
        )
        (info / "entry_points.txt").write_text(
            f"[lmforge]\n{entry_point or module} = {module}\n", encoding="utf-8"
        )
        self.modules.append(module)

    def add_template_plugin(self, dist: str, module: str, template: str) -> None:
        """A plugin that registers one chat template named ``template``."""
        self.add(dist, module, _TEMPLATE_PLUGIN.format(name=template))

    def add_broken_plugin(self, dist: str, module: str) -> None:
        """A plugin whose import raises, as one with a missing native library does."""
        self.add(dist, module, f'raise ImportError("{BROKEN_IMPORT_ERROR}")')


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    site = FakeSite(tmp_path / "site")
    site.path.mkdir()
    monkeypatch.syspath_prepend(str(site.path))
    plugins.reset()
    yield site
    plugins.reset()
    for module in site.modules:
        sys.modules.pop(module, None)

