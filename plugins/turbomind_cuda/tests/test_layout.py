"""The converted layout against a reference built from transformers' own tensors, tensor-parallel
shards, and ``lmforge convert`` end to end (CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from lmforge import registry
from lmforge.cli.app import create_app
from lmforge.engine.support import check_model
from lmforge.errors import ConfigError, ModelLoadError
from lmforge.messages import PytorchEngineConfig
from lmforge.model.loader import load_model_info
from lmforge_turbomind_cuda.converted import check_record, iter_converted, read_record
from lmforge_turbomind_cuda.layout import iter_layout
from torch_runner_helpers import save_hf_model
from turbomind_helpers import KERNEL_TINY
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    """A tiny Qwen2 (it has q/k/v biases) of a shape the kernels take, and its transformers
    model."""
    path = tmp_path_factory.mktemp("qwen2")
    return path, save_hf_model("qwen2", path, **KERNEL_TINY)


def expected_layer(model, i: int) -> dict[str, torch.Tensor]:
    layer = model.model.layers[i]
    a, m = layer.self_attn, layer.mlp
    return {
        "input_norm": layer.input_layernorm.weight,
        "qkv": torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]),
        "qkv_bias": torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]),
        "o": a.o_proj.weight,
        "post_norm": layer.post_attention_layernorm.weight,
        "gate_up": torch.cat([m.gate_proj.weight, m.up_proj.weight]),
        "down": m.down_proj.weight,
    }


def test_layout_fuses_as_the_kernels_read(qwen2):
    path, model = qwen2
    layout = {name: shards[0] for name, shards in
              iter_layout(load_model_info(path), torch.float32)}
    for i in range(model.config.num_hidden_layers):
        for key, tensor in expected_layer(model, i).items():
            torch.testing.assert_close(layout[f"layers.{i}.{key}"], tensor, rtol=0, atol=0)
    torch.testing.assert_close(layout["embed"], model.model.embed_tokens.weight)
    torch.testing.assert_close(layout["lm_head"], model.lm_head.weight)


def test_tp_shards_split_heads_and_mlp_rows(qwen2):
    path, model = qwen2
    c = model.config
    head_dim = c.hidden_size // c.num_attention_heads
    q_rows, kv_rows = c.num_attention_heads * head_dim // 2, c.num_key_value_heads * head_dim // 2
    layout = dict(iter_layout(load_model_info(path), torch.float32, tp=2))
    full = expected_layer(model, 0)
    for r in range(2):
        qkv = layout["layers.0.qkv"][r]
        q, k, v = qkv.split([q_rows, kv_rows, kv_rows])
        torch.testing.assert_close(q, full["qkv"][r * q_rows:(r + 1) * q_rows])
        kv0 = c.num_attention_heads * head_dim
        torch.testing.assert_close(k, full["qkv"][kv0 + r * kv_rows:kv0 + (r + 1) * kv_rows])
        half = c.intermediate_size // 2
        gate, up = layout["layers.0.gate_up"][r].split(half)
        torch.testing.assert_close(gate, full["gate_up"][r * half:(r + 1) * half])
        torch.testing.assert_close(up, full["gate_up"][c.intermediate_size + r * half:
                                                       c.intermediate_size + (r + 1) * half])
    torch.testing.assert_close(torch.cat(layout["layers.0.o"], dim=1), full["o"])
    torch.testing.assert_close(torch.cat(layout["layers.0.down"], dim=1), full["down"])
    torch.testing.assert_close(torch.cat(layout["lm_head"]), model.lm_head.weight)


def test_tp_that_does_not_divide_the_heads_is_refused(qwen2):
    path, _ = qwen2
    with pytest.raises(ModelLoadError, match="Invalid value for tp: the model's 4 attention "
                                             "heads do not split over 8 GPUs."):
        next(iter_layout(load_model_info(path), torch.float32, tp=8))


def test_convert_writes_a_folder_that_maps_without_conversion(qwen2, tmp_path):
    path, _ = qwen2
    dst = tmp_path / "converted"
    result = CliRunner().invoke(create_app(), ["convert", str(path), "--dst-path", str(dst),
                                               "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert "Converted" in result.output
    info = load_model_info(dst)
    assert info.format == "turbomind"
    record = read_record(dst)
    assert record["tp"] == 1 and record["dtype"] == "bfloat16"
    assert json.loads((dst / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
    stored = dict(iter_converted(dst))
    fresh = {n: s[0] for n, s in iter_layout(load_model_info(path), torch.bfloat16)}
    assert stored.keys() == fresh.keys()
    for name, tensor in fresh.items():
        assert stored[name].dtype == torch.bfloat16
        torch.testing.assert_close(stored[name], tensor, rtol=0, atol=0)


def test_converted_folders_refuse_another_tp_and_another_engine(qwen2, tmp_path):
    path, _ = qwen2
    dst = tmp_path / "tp2"
    result = CliRunner().invoke(create_app(), ["convert", str(path), "--dst-path", str(dst),
                                               "--tp", "2"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in dst.iterdir() if p.is_dir()) == ["rank0", "rank1"]
    with pytest.raises(ConfigError, match=r"was converted with --tp 2 but tp=1 was asked for; "
                                          r"convert it again with --tp 1"):
        check_record(read_record(dst), dst, tp=1)
    with pytest.raises(ConfigError, match="The pytorch engine does not support turbomind weights; "
                                          r"the turbomind engine does \(--backend turbomind\)."):
        check_model(registry.get_engine("pytorch"), load_model_info(dst), PytorchEngineConfig())


@pytest.mark.parametrize(("args", "message"), [
    (["--model-format", "awq"], "AWQ (W4A16) models are not supported by the turbomind engine"),
    (["--group-size", "128"], "AWQ (W4A16) models are not supported by the turbomind engine"),
])
def test_convert_refuses_awq_in_one_sentence(qwen2, tmp_path, args, message):
    path, _ = qwen2
    result = CliRunner().invoke(create_app(), ["convert", str(path), "--dst-path",
                                               str(tmp_path / "out"), *args])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output


def test_convert_refuses_a_non_empty_destination(qwen2, tmp_path):
    path, _ = qwen2
    (tmp_path / "taken.txt").write_text("x")
    result = CliRunner().invoke(create_app(), ["convert", str(path), "--dst-path", str(tmp_path)])
    assert result.exit_code == 1
    assert "is not an empty folder; choose a new one." in result.output
