"""`lmforge lite smooth_quant` end to end on a tiny model: LMDeploy's W8A8 layout, smoothing
against none, reuse of a calibration, and one sentence for each bad input."""

from __future__ import annotations

import json
from functools import partial

import pytest
import torch
from lite_models import load_dense, quantize_activations
from safetensors import safe_open

pytest.importorskip("lmforge_quant_smoothquant")

FLAGS = ("--device", "cpu", "--calib-samples", "8", "--calib-seqlen", "32")


@pytest.fixture(scope="module")
def sq_dirs(tmp_path_factory, outlier_model, calib_file):
    from lmforge.cli.app import create_app
    from typer.testing import CliRunner

    folder, _ = outlier_model
    base = tmp_path_factory.mktemp("sq")
    runs = {"smoothed": ["--calib-dataset", calib_file],
            "plain": ["--calib-samples", "0"],
            "fp8": ["--calib-dataset", calib_file, "--quant-dtype", "fp8"],
            "searched": ["--calib-dataset", calib_file, "--search-scale"]}
    for name, extra in runs.items():
        args = ["lite", "smooth_quant", folder, "--work-dir", base / name, *FLAGS, *extra]
        result = CliRunner().invoke(create_app(), list(map(str, args)))
        assert result.exit_code == 0, result.output
    return {name: base / name for name in runs}


def _w8a8_error(folder, reference, dtype) -> float:
    ids = torch.randint(3, 370, (4, 32), generator=torch.Generator().manual_seed(0))
    from lmforge_quant_smoothquant.w8 import fake_quantize_tokens

    model = load_dense(folder, reference)
    quantize_activations(model, partial(fake_quantize_tokens, dtype=dtype))
    with torch.no_grad():
        want, got = reference(ids).logits, model(ids).logits
    return ((got - want).pow(2).mean() / want.pow(2).mean()).item()


def test_the_folder_is_in_lmdeploys_smooth_quant_layout(sq_dirs):
    config = json.loads((sq_dirs["smoothed"] / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "smooth_quant", "quant_dtype": "int8", "weight_granularity": "per_channel",
        "activation_granularity": "per_token", "activation_scheme": "dynamic"}
    assert config["torch_dtype"] == "float16"  # a float32 model's other tensors, as LMDeploy
    fp8 = json.loads((sq_dirs["fp8"] / "config.json").read_text())["quantization_config"]
    assert fp8["quant_dtype"] == "float8_e4m3fn"
    for name, dtype in (("smoothed", torch.int8), ("fp8", torch.float8_e4m3fn)):
        with safe_open(str(sq_dirs[name] / "model.safetensors"), "pt") as f:
            up = "model.layers.1.mlp.up_proj"
            assert f.get_tensor(f"{up}.weight").dtype == dtype
            assert f.get_tensor(f"{up}.weight").shape == (128, 64)
            assert f.get_tensor(f"{up}.scale").dtype == torch.float32
            assert f.get_tensor(f"{up}.scale").shape == (128, 1)
            assert f.get_tensor("model.layers.1.input_layernorm.weight").dtype == torch.float16
            assert f.get_tensor("lm_head.weight").dtype == torch.float16


def test_smoothing_beats_plain_w8a8_when_activations_have_outliers(sq_dirs, outlier_model):
    _, reference = outlier_model
    plain = _w8a8_error(sq_dirs["plain"], reference, torch.int8)
    smoothed = _w8a8_error(sq_dirs["smoothed"], reference, torch.int8)
    searched = _w8a8_error(sq_dirs["searched"], reference, torch.int8)
    assert smoothed < 0.7 * plain, (smoothed, plain)
    assert searched < plain, (searched, plain)
    assert _w8a8_error(sq_dirs["fp8"], reference, torch.float8_e4m3fn) < 0.05


def test_a_calibration_is_reused_without_the_text(lite_cli, outlier_model, calib_file, tmp_path,
                                                 sq_dirs, monkeypatch):
    import lmforge_quant_smoothquant.quantize as sq

    folder, _ = outlier_model
    work = tmp_path / "work"
    flags = [*FLAGS, "--calib-dataset", calib_file]
    assert lite_cli("calibrate", folder, "--work-dir", work, *flags).exit_code == 0
    assert sorted(p.name for p in work.iterdir()) == ["calibration.json", "calibration.pt"]

    def no_text(*args, **kwargs):
        raise AssertionError("the calibration text was read again")

    monkeypatch.setattr(sq, "load_samples", no_text)
    result = lite_cli("smooth_quant", folder, "--work-dir", work, *flags)
    assert result.exit_code == 0, result.output
    assert {"calibration.json", "config.json", "model.safetensors"} <= {p.name for p in work.iterdir()}
    with safe_open(str(work / "model.safetensors"), "pt") as a, \
            safe_open(str(sq_dirs["smoothed"] / "model.safetensors"), "pt") as b:
        for name in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.scale"):
            torch.testing.assert_close(a.get_tensor(name).float(), b.get_tensor(name).float())
    other = lite_cli("smooth_quant", folder, "--work-dir", work, *FLAGS)
    assert other.exit_code == 1 and "exists and is not empty" in other.stderr


def test_an_unknown_quant_dtype_is_refused(lite_cli, outlier_model, tmp_path):
    folder, _ = outlier_model
    result = lite_cli("smooth_quant", folder, "--work-dir", tmp_path / "o", "--quant-dtype", "int4")
    assert result.exit_code == 2
    assert "'int4' is not one of 'int8', 'fp8', 'float8_e4m3fn'" in result.output
    assert not (tmp_path / "o").exists()


def test_fp8_on_a_gpu_without_fp8_tensor_cores_is_refused(monkeypatch):
    from lmforge.errors import ConfigError
    from lmforge_quant_smoothquant.quantize import SmoothQuantOptions, check_device

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    with pytest.raises(ConfigError, match=r"^--quant-dtype fp8 needs a GPU with fp8 tensor cores "
                       r"\(compute capability 8.9 or newer: Ada, Hopper, Blackwell\) and NVIDIA "
                       r"A100 is 8.0; use --quant-dtype int8\.$"):
        check_device(SmoothQuantOptions(quant_dtype="fp8"), torch.device("cuda"))
    check_device(SmoothQuantOptions(quant_dtype="int8"), torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    check_device(SmoothQuantOptions(quant_dtype="fp8"), torch.device("cuda"))


def test_cuda_without_a_gpu_is_one_sentence(lite_cli, outlier_model, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder, _ = outlier_model
    result = lite_cli("smooth_quant", folder, "--work-dir", tmp_path / "o", "--device", "cuda")
    assert result.exit_code == 1
    assert result.stderr == ("Error: --device cuda needs a CUDA GPU and none is visible; pass "
                             "--device cpu.\n")
