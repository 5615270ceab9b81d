"""load_model_info: formats, canonical weight streams, defaults and one-sentence errors."""

from __future__ import annotations

import json

import pytest
import torch
from lmforge.errors import ModelLoadError
from lmforge.model.loader import load_model_info
from lmforge.model.weights import canonical_shapes
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

TINY = dict(
    vocab_size=64,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    eos_token_id=2,
)


def _canonical(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = {
        "model.embed_tokens.weight": "embed",
        "model.norm.weight": "norm",
        "lm_head.weight": "lm_head",
    }
    layer = {
        "input_layernorm.weight": "input_norm",
        "post_attention_layernorm.weight": "post_attn_norm",
        "self_attn.q_proj.weight": "attn.q.weight",
        "self_attn.k_proj.weight": "attn.k.weight",
        "self_attn.v_proj.weight": "attn.v.weight",
        "self_attn.o_proj.weight": "attn.o.weight",
        "mlp.gate_proj.weight": "mlp.gate.weight",
        "mlp.up_proj.weight": "mlp.up.weight",
        "mlp.down_proj.weight": "mlp.down.weight",
    }
    out = {}
    for name, tensor in state.items():
        if name in names:
            out[names[name]] = tensor
        else:
            _, _, i, rest = name.split(".", 3)
            out[f"layers.{i}.{layer[rest]}"] = tensor
    return out


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**TINY)).eval()


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "bin"])
def test_weights_stream_under_canonical_names(llama, layout, tmp_path):
    if layout == "bin":
        llama.config.architectures = ["LlamaForCausalLM"]
        llama.config.save_pretrained(tmp_path)
        torch.save(llama.state_dict(), tmp_path / "pytorch_model.bin")
    else:
        llama.save_pretrained(tmp_path, max_shard_size="20KB" if layout == "sharded" else "5GB")
    info = load_model_info(tmp_path)
    assert info.format == ("bin" if layout == "bin" else "safetensors")
    if layout == "sharded":
        assert (tmp_path / "model.safetensors.index.json").exists() and len(info.shards) > 1
    got = dict(info.iter_weights())
    expected = _canonical(llama.state_dict())
    assert got.keys() == expected.keys() == {n for n, _, _ in canonical_shapes(info.config)}
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0)


def test_config_session_len_and_eos(llama, tmp_path):
    llama.save_pretrained(tmp_path)
    GenerationConfig(eos_token_id=[2, 7]).save_pretrained(tmp_path)
    info = load_model_info(tmp_path)
    c = info.config
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim) == (
        2,
        32,
        4,
        2,
        8,
    )
    assert info.session_len == 128 and info.eos_token_ids == [2, 7]
    assert info.tokenizer_path == tmp_path and info.tokenizer_gguf_file is None
    assert load_model_info(tmp_path, rope_scaling_factor=2.5).session_len == 320
    assert load_model_info(tmp_path, session_len=50).session_len == 50


def test_dummy_from_config_alone(tmp_path):
    config = {**TINY, "architectures": ["LlamaForCausalLM"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    info = load_model_info(tmp_path, load_format="dummy")
    assert info.format == "dummy" and info.load_format == "dummy"
    weights = dict(info.iter_weights())
    assert {n: tuple(t.shape) for n, t in weights.items()} == {n: shape for n, shape, _ in canonical_shapes(info.config)}
    assert weights["norm"].mean().item() == pytest.approx(1.0, abs=0.01)
    assert weights["embed"].std().item() == pytest.approx(0.02, rel=0.1)
    torch.testing.assert_close(dict(info.iter_weights())["embed"], weights["embed"], rtol=0, atol=0)


def test_gguf_folder_with_one_file(smollm2_gguf, tmp_path):
    (tmp_path / smollm2_gguf.name).symlink_to(smollm2_gguf)
    info = load_model_info(tmp_path)
    assert info.format == "gguf" and info.path == tmp_path / smollm2_gguf.name
    assert info.tokenizer_gguf_file == smollm2_gguf.name
    c = info.config
    assert (c.architecture, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads) == (
        "LlamaForCausalLM",
        30,
        576,
        9,
        3,
    )
    assert c.tie_word_embeddings and c.rope.theta == 100000.0 and info.session_len == 8192


def test_missing_path(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model_info(tmp_path / "nope")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="No config.json"):
        load_model_info(tmp_path)


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({**TINY, "architectures": ["LlamaForCausalLM"]})
    )
    with pytest.raises(ModelLoadError, match="No weights found"):
        load_model_info(tmp_path)


def test_unsupported_architecture_lists_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ModelLoadError) as err:
        load_model_info(tmp_path)
    message = str(err.value)
    assert "'GPT2LMHeadModel'" in message
    for name in (
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "InternLM2ForCausalLM",
        "Qwen3ForCausalLM",
        "Qwen3MoeForCausalLM",
        "MixtralForCausalLM",
        "Gemma2ForCausalLM",
        "Gemma3ForCausalLM",
        "Phi3ForCausalLM",
    ):
        assert name in message
