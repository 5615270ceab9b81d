"""The `lmforge lite` group: sub-commands from quantizer specs, resolved lazily, and one sentence
naming the distribution when a known quantizer is not installed."""

from __future__ import annotations

import sys
import types

import pytest
from lmforge import hookimpl, plugins
from lmforge.registry import QuantizerSpec


@pytest.fixture
def no_quantizers(monkeypatch):
    monkeypatch.setenv(plugins.ALLOW_ENV, "")
    plugins.reset()
    yield
    plugins.reset()


def test_without_quantizers_lite_names_the_distributions(lite_cli, no_quantizers):
    result = lite_cli()
    assert result.exit_code == 0
    assert "calibrate" in result.stdout
    assert "Not installed: needs lmforge-quant-awq." in result.stdout
    assert "No quantizer is installed: install lmforge-quant-awq (auto_awq) or " \
        "lmforge-quant-smoothquant (smooth_quant)" in result.stderr


@pytest.mark.parametrize("command, distribution, folder", [
    ("auto_awq", "lmforge-quant-awq", "plugins/quant_awq"),
    ("smooth_quant", "lmforge-quant-smoothquant", "plugins/quant_smoothquant"),
])
def test_a_missing_quantizer_command_is_one_sentence(lite_cli, no_quantizers, command,
                                                      distribution, folder):
    result = lite_cli(command, "model", "--work-dir", "out")
    assert result.exit_code == 1
    assert result.stderr == (f"Error: `lmforge lite {command}` comes with the {distribution} "
                             f"distribution; install it (`pip install ./{folder}` from lmforge's "
                             "repository).\n")


def test_installed_quantizers_list_their_commands(lite_cli):
    pytest.importorskip("lmforge_quant_awq")
    pytest.importorskip("lmforge_quant_smoothquant")
    result = lite_cli("--help")
    assert "Quantize weights to 4 bits with AWQ" in result.stdout
    assert "Quantize weights and activations to 8 bits" in result.stdout
    assert "Not installed" not in result.stdout
    help_text = lite_cli("auto_awq", "--help").stdout
    for flag in ("--calib-dataset", "--calib-samples", "--calib-seqlen", "--batch-size",
                 "--search-scale", "--device", "--w-bits", "--w-sym", "--w-group-size",
                 "--work-dir"):
        assert flag in help_text
    assert "--quant-dtype" in lite_cli("smooth_quant", "--help").stdout


def test_a_plugin_quantizer_command_is_imported_only_when_used(lite_cli, no_quantizers,
                                                               monkeypatch):
    module = types.ModuleType("fake_quant_cli")

    def gptq(model: str, bits: int = 4) -> None:
        """Quantize with a fake method."""
        print(f"gptq {model} {bits}")

    module.gptq = gptq
    monkeypatch.setitem(sys.modules, "fake_quant_cli", module)

    class FakeQuantizer:
        @staticmethod
        @hookimpl
        def register_quantizers(register):
            register(QuantizerSpec("gptq", command="gptq", format="GPTQ", cli="fake_quant_cli:gptq",
                                   description="A fake quantizer."))

    plugins.register_plugin(FakeQuantizer, name="fake-quant")
    result = lite_cli("gptq", "m", "--bits", "3")
    assert result.exit_code == 0 and result.stdout == "gptq m 3\n"
