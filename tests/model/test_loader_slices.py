"""iter_weights(select=...): one tensor-parallel rank's slices, read without the whole model."""

from __future__ import annotations

import json

import pytest
import torch
from lmforge.model.loader import load_model_info
from transformers import LlamaConfig, LlamaForCausalLM

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def select(name: str, shape: tuple[int, ...]):
    """A rank's cut of every kind of tensor: rows of some, columns of others, all of the rest."""
    if name.endswith(("attn.o.weight", "mlp.down.weight")):
        return 1, shape[1] // 2, shape[1]
    if name.endswith(".weight") or name in ("embed", "lm_head"):
        return 0, 0, shape[0] // 2
    return None


def _expected(info):
    out = {}
    for name, tensor in info.iter_weights():
        part = select(name, tuple(tensor.shape))
        out[name] = tensor if part is None else tensor.narrow(part[0], part[1], part[2] - part[1])
    return out


def _check(info, expected=None):
    expected = expected or _expected(info)
    got = dict(info.iter_weights(select=select))
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0)
        assert got[name].is_contiguous()


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**TINY)).eval()


@pytest.mark.parametrize("layout", ["sharded", "bin"])
def test_checkpoint_slices(llama, layout, tmp_path):
    if layout == "bin":
        llama.config.architectures = ["LlamaForCausalLM"]
        llama.config.save_pretrained(tmp_path)
        torch.save(llama.state_dict(), tmp_path / "pytorch_model.bin")
    else:
        llama.save_pretrained(tmp_path, max_shard_size="20KB")
    _check(load_model_info(tmp_path))


def test_safetensors_reads_only_the_slices(llama, tmp_path, monkeypatch):
    import safetensors

    llama.save_pretrained(tmp_path)
    info = load_model_info(tmp_path)
    expected = _expected(info)
    real = safetensors.safe_open
    whole = []

    class Recording:
        def __init__(self, *args, **kwargs):
            self.handle = real(*args, **kwargs)

        def __enter__(self):
            self.inner = self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def keys(self):
            return self.inner.keys()

        def get_slice(self, name):
            return self.inner.get_slice(name)

        def get_tensor(self, name):
            whole.append(name)
            return self.inner.get_tensor(name)

    monkeypatch.setattr(safetensors, "safe_open", Recording)
    _check(info, expected)
    assert whole == []  # the Llama layout only renames: every tensor was read as its slice


def test_rearranged_tensors_are_read_whole_then_cut(llama, tmp_path, monkeypatch):
    llama.save_pretrained(tmp_path)
    info = load_model_info(tmp_path)
    plain = info.adapter.map_weights

    def fused(name, tensor):  # an adapter that builds q from its checkpoint tensor
        return [(n, t * 1 if n.endswith("attn.q.weight") else t) for n, t in plain(name, tensor)]

    expected = _expected(info)
    monkeypatch.setattr(info.adapter, "map_weights", fused)
    got = dict(info.iter_weights(select=select))
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0)


def test_dummy_slices_are_cut_from_the_same_values(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({**TINY, "architectures": ["LlamaForCausalLM"]}))
    _check(load_model_info(tmp_path, load_format="dummy"))


def test_gguf_slices(smollm2_gguf):
    info = load_model_info(smollm2_gguf)
    names = {"embed", "layers.0.attn.q.weight", "layers.0.attn.o.weight", "layers.0.input_norm"}
    got = {}
    for name, tensor in info.iter_weights(select=select):
        if name in names:
            got[name] = tensor
        if len(got) == len(names):
            break
    config = info.config
    assert got["embed"].shape == (config.vocab_size // 2, config.hidden_size)
    assert got["layers.0.attn.q.weight"].shape == (config.q_size // 2, config.hidden_size)
    assert got["layers.0.attn.o.weight"].shape == (config.hidden_size, config.q_size // 2)
    assert got["layers.0.input_norm"].shape == (config.hidden_size,)
