"""``scripts/quantized_dummy_model.py``: a folder whose random weights load in a quantized format,
which ``lmforge bench`` then runs (on the CPU here, through the engine's PyTorch path)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lmforge.model.loader import load_model_info
from lmforge.model.quant import read_quant_config
from test_bench_cli import invoke

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "quantized_dummy_model.py"


def make(src: Path, out: Path, fmt: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(src), str(out), fmt, *extra],
                          capture_output=True, text=True)


@pytest.mark.parametrize("fmt,method,dtype", [("awq", "awq", "int4"), ("int8", "w8a8", "int8"),
                                              ("fp8", "w8a8", "fp8_e4m3")])
def test_the_folder_declares_the_format(tiny_model, tmp_path, fmt, method, dtype):
    out = tmp_path / fmt
    assert make(tiny_model, out, fmt, "--group-size", "32").returncode == 0
    config = json.loads((out / "config.json").read_text())
    quant = read_quant_config(config)
    assert (quant.method, quant.dtype) == (method, dtype)
    assert quant.group_size == (32 if fmt == "awq" else None)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tiny_model.iterdir())
    # The dummy loader makes that format's tensors.
    dtypes = {name.rpartition(".")[2]: tensor.dtype for name, tensor in
              load_model_info(out, load_format="dummy").iter_weights()}
    if fmt == "awq":
        assert dtypes["qweight"] == dtypes["qzeros"] == torch.int32 and "weight_scale" not in dtypes
    else:
        assert "qweight" not in dtypes and dtypes["weight_scale"] == torch.float32


@pytest.mark.parametrize("fmt", ["awq", "int8"])
def test_bench_runs_the_random_quantized_weights(tiny_model, tmp_path, fmt):
    out = tmp_path / fmt
    assert make(tiny_model, out, fmt, "--group-size", "32").returncode == 0
    report_path = tmp_path / "gen.json"
    invoke("generation", str(out), "--batch-size", "2", "--input-len", "8", "--output-len", "4",
           "--device", "cpu", "--json", str(report_path))
    row = json.loads(report_path.read_text())["rows"][0]
    assert row["generated_tokens"] == 8


def test_an_already_quantized_folder_is_refused(tiny_model, tmp_path):
    assert make(tiny_model, tmp_path / "awq", "awq", "--group-size", "32").returncode == 0
    again = make(tmp_path / "awq", tmp_path / "twice", "int8")
    assert again.returncode != 0 and "already quantized" in again.stderr
