"""`lmforge lite auto_awq` end to end on a tiny model: the AutoAWQ layout, what it dequantizes
to, AWQ against round-to-nearest, and one sentence for each bad input."""

from __future__ import annotations

import json

import pytest
import torch
from lite_models import calibration_text, load_dense
from safetensors import safe_open

pytest.importorskip("lmforge_quant_awq")

FLAGS = ("--device", "cpu", "--calib-samples", "8", "--calib-seqlen", "32", "--w-group-size", "32")


@pytest.fixture(scope="module")
def ids(byte_fallback_hf_tokenizer, tmp_path_factory):
    """Text like the calibration text (AWQ is tuned to its activations), but other words."""
    text = calibration_text(tmp_path_factory.mktemp("held_out") / "t.txt", seed=1).read_text()
    tokens = byte_fallback_hf_tokenizer(text, add_special_tokens=False)["input_ids"][:128]
    return torch.tensor(tokens).reshape(4, 32)


def _error(folder, reference, ids) -> float:
    with torch.no_grad():
        want = reference(ids).logits
        got = load_dense(folder, reference)(ids).logits
    return ((got - want).pow(2).mean() / want.pow(2).mean()).item()


@pytest.fixture(scope="module")
def awq_dirs(tmp_path_factory, outlier_model, calib_file):
    from lmforge.cli.app import create_app
    from typer.testing import CliRunner

    folder, _ = outlier_model
    base = tmp_path_factory.mktemp("awq")
    runs = {"awq": ["--calib-dataset", calib_file], "rtn": ["--calib-samples", "0"]}
    for name, extra in runs.items():
        args = ["lite", "auto_awq", folder, "--work-dir", base / name, *FLAGS, *extra]
        result = CliRunner().invoke(create_app(), list(map(str, args)))
        assert result.exit_code == 0, result.output
    return {name: base / name for name in runs}


def test_the_folder_is_in_autoawq_gemm_layout(awq_dirs, outlier_model):
    out = awq_dirs["awq"]
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": True, "version": "gemm"}
    assert config["torch_dtype"] == "float16"
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        q = "model.layers.1.self_attn.q_proj"
        assert f.get_tensor(f"{q}.qweight").dtype == torch.int32
        assert f.get_tensor(f"{q}.qweight").shape == (64, 64 // 8)
        assert f.get_tensor(f"{q}.qzeros").shape == (64 // 32, 64 // 8)
        assert f.get_tensor(f"{q}.scales").dtype == torch.float16
        assert f.get_tensor(f"{q}.scales").shape == (64 // 32, 64)
        down = "model.layers.0.mlp.down_proj"
        assert f.get_tensor(f"{down}.qweight").shape == (128, 64 // 8)
        assert f.get_tensor("model.layers.0.input_layernorm.weight").dtype == torch.float16
    assert not any(n.endswith("_proj.weight") for n in names)
    assert {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"} <= names


def test_awq_is_closer_to_the_float_model_than_round_to_nearest(awq_dirs, outlier_model, ids):
    _, reference = outlier_model
    awq, rtn = _error(awq_dirs["awq"], reference, ids), _error(awq_dirs["rtn"], reference, ids)
    assert awq < 0.7 * rtn, (awq, rtn)
    assert awq < 0.05


def test_norms_carry_the_folded_scales(awq_dirs, outlier_model):
    _, reference = outlier_model
    with safe_open(str(awq_dirs["awq"] / "model.safetensors"), "pt") as f:
        norm = f.get_tensor("model.layers.0.input_layernorm.weight").float()
    assert not torch.allclose(norm, reference.model.layers[0].input_layernorm.weight.half().float())
    with safe_open(str(awq_dirs["rtn"] / "model.safetensors"), "pt") as f:
        plain = f.get_tensor("model.layers.0.input_layernorm.weight").float()
    torch.testing.assert_close(plain, reference.model.layers[0].input_layernorm.weight.half().float())


def test_an_already_quantized_model_is_refused(lite_cli, awq_dirs, tmp_path):
    result = lite_cli("auto_awq", awq_dirs["awq"], "--work-dir", tmp_path / "again", *FLAGS)
    assert result.exit_code == 1
    assert "is already quantized (quantization_config: awq); pass the unquantized model." in (
        result.stderr)


@pytest.mark.parametrize("flags, message", [
    (("--w-bits", "3"), "--w-bits 3 is not supported: auto_awq writes 4-bit weights (AutoAWQ's "
     "GEMM layout); pass --w-bits 4."),
    (("--w-group-size", "48"), "--w-group-size 48 does not divide the input size 64 of "
     "layers.0.attn.q; use a group size that divides every layer's input size: 32 or 64."),
    (("--calib-dataset", "/no/such/file.txt"), "--calib-dataset /no/such/file.txt is neither a "
     "built-in dataset (shakespeare, sharegpt) nor an existing file"),
])
def test_bad_flags_are_one_sentence(lite_cli, outlier_model, tmp_path, flags, message):
    folder, _ = outlier_model
    result = lite_cli("auto_awq", folder, "--work-dir", tmp_path / "out", *FLAGS, *flags)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {message}")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_an_empty_calibration_file_is_one_sentence(lite_cli, outlier_model, tmp_path):
    folder, _ = outlier_model
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    result = lite_cli("auto_awq", folder, "--work-dir", tmp_path / "out", *FLAGS,
                      "--calib-dataset", empty)
    assert result.exit_code == 1
    assert result.stderr == f"Error: --calib-dataset {empty} holds no text; pass a file with some " \
        "text in it.\n"


def test_a_work_dir_that_is_not_empty_is_refused(lite_cli, outlier_model, tmp_path):
    folder, _ = outlier_model
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    result = lite_cli("auto_awq", folder, "--work-dir", tmp_path / "out", *FLAGS,
                      "--calib-samples", "0")
    assert result.exit_code == 1
    assert "exists and is not empty; pass a new or empty folder" in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_an_interrupted_run_leaves_nothing(lite_cli, outlier_model, tmp_path, monkeypatch):
    import lmforge_quant_awq.quantize as awq

    folder, _ = outlier_model
    calls = []

    def interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 9:  # in the second layer
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = awq.quantize_linear
    monkeypatch.setattr(awq, "quantize_linear", interrupt)
    result = lite_cli("auto_awq", folder, "--work-dir", tmp_path / "out", *FLAGS,
                      "--calib-samples", "0")
    assert result.exit_code != 0
    assert list(tmp_path.iterdir()) == []
