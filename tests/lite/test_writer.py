"""The HF folder writer and the --work-dir rules: nothing that looks finished until it is."""

from __future__ import annotations

import json

import pytest
import torch
from lite_models import save_tiny
from lmforge.errors import ConfigError, ModelLoadError
from lmforge.lite.stats import Calibration, CalibrationMeta
from lmforge.lite.workdir import check_new_work_dir, reusable_calibration
from lmforge.lite.writer import CheckpointWriter, HfNames, output_config
from lmforge.model.loader import load_model_info
from safetensors import safe_open


@pytest.fixture(scope="module")
def tiny_info(tmp_path_factory):
    folder, _ = save_tiny(tmp_path_factory.mktemp("tiny"), "llama")
    (folder / "tokenizer_config.json").write_text("{}")
    (folder / "chat_template.jinja").write_text("{{ messages }}")
    return load_model_info(folder)


def test_hf_names_invert_the_adapter(tiny_info):
    names = HfNames(tiny_info)
    assert names.hf("embed") == "model.embed_tokens.weight"
    assert names.hf("layers.3.input_norm") == "model.layers.3.input_layernorm.weight"
    assert names.hf("layers.0.attn.q.qweight") == "model.layers.0.self_attn.q_proj.qweight"
    assert names.hf("layers.1.mlp.down.scale") == "model.layers.1.mlp.down_proj.scale"
    assert names.hf("layers.1.attn.k.bias") == "model.layers.1.self_attn.k_proj.bias"


def test_hf_names_of_an_adapter_with_a_module_table():
    class Adapter:
        global_names = {"model.embed_tokens.weight": "embed"}
        layer_names = {"input_layernorm.weight": "input_norm"}
        layer_linears = {"self_attn.q_proj": "attn.q", "mlp.down_proj": "mlp.down"}

    class Info:
        adapter = Adapter()
        architecture = "LlamaForCausalLM"

    names = HfNames(Info())
    assert names.hf("layers.2.attn.q.qweight") == "model.layers.2.self_attn.q_proj.qweight"
    assert names.hf("layers.0.mlp.down.scale") == "model.layers.0.mlp.down_proj.scale"
    assert names.hf("layers.0.input_norm") == "model.layers.0.input_layernorm.weight"


def test_an_architecture_without_separate_qkv_is_refused_before_work(tmp_path):
    from lmforge.model.adapters.internlm2 import InternLM2Adapter

    class Info:
        adapter = InternLM2Adapter()
        architecture = "InternLM2ForCausalLM"

    with pytest.raises(ModelLoadError, match="cannot write InternLM2ForCausalLM checkpoints: its "
                       "layout has no tensor of its own for layers.0.attn.q.qweight"):
        HfNames(Info()).hf("layers.0.attn.q.qweight")


def _write(tiny_info, work_dir, shard_bytes=1 << 30, fail_after=None):
    with CheckpointWriter(work_dir, tiny_info, shard_bytes=shard_bytes) as writer:
        for i, name in enumerate(("embed", "norm", "layers.0.input_norm", "layers.0.attn.q.qweight")):
            if fail_after is not None and i == fail_after:
                raise KeyboardInterrupt
            writer.add(name, torch.full((4, 4), float(i)))
        return writer.finish(output_config(tiny_info, {"quant_method": "smooth_quant", "quant_dtype": "int8"}, "float16"))


def test_one_shard_folder_with_config_tokenizer_and_template(tiny_info, tmp_path):
    out = _write(tiny_info, tmp_path / "out")
    files = sorted(p.name for p in out.iterdir())
    assert files == ["chat_template.jinja", "config.json", "generation_config.json",
                     "model.safetensors", "tokenizer_config.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == {"quant_method": "smooth_quant", "quant_dtype": "int8"}
    assert config["torch_dtype"] == "float16" and config["architectures"] == ["LlamaForCausalLM"]
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["model.embed_tokens.weight",
                                    "model.layers.0.input_layernorm.weight",
                                    "model.layers.0.self_attn.q_proj.qweight", "model.norm.weight"]
    assert not (tmp_path / ".out.partial").exists()


def test_shards_and_index_when_over_the_shard_size(tiny_info, tmp_path):
    out = _write(tiny_info, tmp_path / "out", shard_bytes=50)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [
        f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    assert load_model_info(out).shards == [out / f"model-0000{i}-of-00004.safetensors"
                                           for i in range(1, 5)]


def test_an_interrupted_run_leaves_no_folder(tiny_info, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _write(tiny_info, tmp_path / "out", shard_bytes=50, fail_after=3)
    assert list(tmp_path.iterdir()) == []


def test_a_stale_staging_folder_is_replaced(tiny_info, tmp_path):
    stale = tmp_path / ".out.partial"
    stale.mkdir()
    (stale / "model.safetensors").write_text("half")
    out = _write(tiny_info, tmp_path / "out")
    assert (out / "config.json").exists() and not stale.exists()


def test_a_non_empty_work_dir_is_refused(tmp_path):
    (tmp_path / "w").mkdir()
    check_new_work_dir(tmp_path / "w")
    (tmp_path / "w" / "x").write_text("")
    with pytest.raises(ConfigError, match=r"^--work-dir .*w exists and is not empty; pass a new "
                       r"or empty folder\.$"):
        check_new_work_dir(tmp_path / "w")


def test_a_matching_calibration_is_reused_and_others_refused(tmp_path):
    meta = CalibrationMeta(model="/m", dataset="shakespeare", samples=4, seqlen=8)
    Calibration(meta, {"layers.0.attn.q": torch.ones(2)}, {"layers.0.attn.q": torch.ones(2)}).save(
        tmp_path)
    reused = reusable_calibration(tmp_path, CalibrationMeta("/m", "shakespeare", 4, 8))
    assert torch.equal(reused.absmax["layers.0.attn.q"], torch.ones(2))
    with pytest.raises(ConfigError, match="holds a calibration of /m on shakespeare \\(4 samples "
                       "of 8 tokens\\), not of this model and these calibration flags"):
        reusable_calibration(tmp_path, CalibrationMeta("/m", "shakespeare", 8, 8))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        reusable_calibration(tmp_path, CalibrationMeta("/m", "shakespeare", 4, 8))
    assert reusable_calibration(tmp_path / "new", meta) is None


def test_the_model_files_move_into_a_calibration_work_dir(tiny_info, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    Calibration(CalibrationMeta("/m", "d", 1, 1), {}, {}).save(work)
    _write(tiny_info, work)
    assert {"calibration.json", "calibration.pt", "config.json", "model.safetensors"} <= {
        p.name for p in work.iterdir()}
