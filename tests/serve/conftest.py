"""Fixtures of the serving tests; the process helpers live in ``server_process``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_process import Server, fake_server_process


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory) -> Iterator[Server]:
    """The server around the fake engine (5 ms per token, session_len 64), no API keys."""
    yield from fake_server_process(tmp_path_factory.mktemp("fake_server"))
