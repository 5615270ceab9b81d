"""Fixtures of the benchmark tests: the tiny benchmark config with random weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "benchmarks" / "models" / "tiny-llama" / "config.json"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, smollm2_tokenizer_dir) -> Path:
    """The tiny config beside a saved copy of the demo tokenizer, which loads in a fraction of
    the time the GGUF one takes (``LMFORGE_TEST_TOKENIZER`` where the demo model is absent)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    shutil.copy(TINY_CONFIG, folder / "config.json")
    for file in smollm2_tokenizer_dir.iterdir():
        shutil.copy(file, folder / file.name)
    return folder
