"""Chat-template tests run with the installed plugins, lmforge-templates among them."""

from __future__ import annotations

import pytest
from lmforge import plugins


@pytest.fixture(autouse=True, scope="session")
def _templates_plugin_loaded():
    names = {info.name for info in plugins.plugin_infos() if info.status == "loaded"}
    if "templates" not in names:
        pytest.fail("the lmforge-templates plugin is not loaded: pip install -e plugins/templates")
