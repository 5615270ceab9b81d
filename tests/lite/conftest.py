"""Fixtures of the `lmforge lite` tests: a tiny model with outlier channels and a tokenizer,
calibration text, and the CLI."""

from __future__ import annotations

import pytest
from lite_models import calibration_text, save_tiny
from lmforge.cli.app import create_app
from typer.testing import CliRunner


@pytest.fixture(scope="session")
def outlier_model(tmp_path_factory, byte_fallback_hf_tokenizer):
    """``(folder, transformers model)``: a tiny Llama whose norms have 10x outlier channels."""
    return save_tiny(tmp_path_factory.mktemp("outlier"), "llama", byte_fallback_hf_tokenizer,
                     outliers=10.0, vocab_size=512)


@pytest.fixture(scope="session")
def calib_file(tmp_path_factory):
    return calibration_text(tmp_path_factory.mktemp("calib") / "calib.txt")


@pytest.fixture
def lite_cli():
    """``lite_cli("auto_awq", ...)`` runs ``lmforge lite ...`` in-process."""
    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(create_app(), ["lite", *map(str, args)], env={"COLUMNS": "200"})
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    return invoke
