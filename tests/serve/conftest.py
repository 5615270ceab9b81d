"""Fixtures of the serving tests; the process helpers live in ``server_process``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from server_process import TINY_SESSION_LEN, Server, fake_server_process, lmforge_server


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory) -> Iterator[Server]:
    """The server around the fake engine (5 ms per token, session_len 64), no API keys."""
    yield from fake_server_process(tmp_path_factory.mktemp("fake_server"))


@pytest.fixture(scope="session")
def tiny_server(tiny_llama_dir, tmp_path_factory) -> Iterator[Server]:
    """``lmforge serve api_server`` with a tiny random Llama (SmolLM2's tokenizer) named "tiny",
    session_len 256, with the CLI's defaults otherwise."""
    yield from lmforge_server(
        tmp_path_factory.mktemp("tiny_server"),
        str(tiny_llama_dir),
        "--model-name", "tiny",
        "--session-len", str(TINY_SESSION_LEN),
        "--cache-max-entry-count", "1024",  # a block count: keeps host memory small
        "--max-batch-size", "256",
    )  # fmt: skip
