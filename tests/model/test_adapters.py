"""Architecture adapters: config mapping and weight-name mapping."""

from __future__ import annotations

import pytest
import torch
from lmforge.errors import ModelLoadError
from lmforge.model.adapters.internlm2 import InternLM2Adapter
from lmforge.model.adapters.llama import LlamaAdapter
from lmforge.model.adapters.mistral import MistralAdapter
from lmforge.model.adapters.qwen2 import Qwen2Adapter

HF = dict(
    num_hidden_layers=1,
    hidden_size=16,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=32,
    vocab_size=10,
)


def test_internlm2_splits_interleaved_wqkv():
    adapter = InternLM2Adapter()
    config = adapter.config_from_hf(
        {**HF, "architectures": ["InternLM2ForCausalLM"], "bias": False}
    )
    d, groups = config.head_dim, 2
    # Row r of head h gets the value 1000*kind + 100*h + r: the split must keep heads in order.
    q = torch.stack([torch.full((d, 16), 100.0 * h) + torch.arange(d)[:, None] for h in range(4)])
    k = torch.stack(
        [torch.full((d, 16), 1000.0 + 100 * h) + torch.arange(d)[:, None] for h in range(2)]
    )
    v = torch.stack(
        [torch.full((d, 16), 2000.0 + 100 * h) + torch.arange(d)[:, None] for h in range(2)]
    )
    wqkv = torch.cat([q.reshape(2, groups, d, 16), k[:, None], v[:, None]], dim=1).reshape(-1, 16)
    out = dict(adapter.map_weights("model.layers.0.attention.wqkv.weight", wqkv))
    torch.testing.assert_close(out["layers.0.attn.q.weight"], q.reshape(-1, 16))
    torch.testing.assert_close(out["layers.0.attn.k.weight"], k.reshape(-1, 16))
    torch.testing.assert_close(out["layers.0.attn.v.weight"], v.reshape(-1, 16))
    assert dict(adapter.map_weights("output.weight", torch.ones(1))).keys() == {"lm_head"}
    assert dict(
        adapter.map_weights("model.layers.0.feed_forward.w3.weight", torch.ones(1))
    ).keys() == {"layers.0.mlp.up.weight"}


def test_qwen2_has_qkv_bias_only():
    config = Qwen2Adapter().config_from_hf({**HF, "architectures": ["Qwen2ForCausalLM"]})
    assert config.qkv_bias and not config.o_bias
    with pytest.raises(ModelLoadError, match="use_sliding_window"):
        Qwen2Adapter().config_from_hf({**HF, "architectures": ["Q"], "use_sliding_window": True})


def test_mistral_sliding_window():
    adapter = MistralAdapter()
    assert (
        adapter.config_from_hf(
            {**HF, "architectures": ["M"], "sliding_window": 4096}
        ).sliding_window
        == 4096
    )
    assert (
        adapter.config_from_hf(
            {**HF, "architectures": ["M"], "sliding_window": None}
        ).sliding_window
        is None
    )


def test_llama_mapping_and_errors():
    adapter = LlamaAdapter()
    assert list(adapter.map_weights("model.layers.3.self_attn.k_proj.bias", torch.ones(1)))[0][
        0
    ] == ("layers.3.attn.k.bias")
    assert (
        list(adapter.map_weights("model.layers.0.self_attn.rotary_emb.inv_freq", torch.ones(1)))
        == []
    )
    with pytest.raises(ModelLoadError, match="model.vision.weight"):
        adapter.map_weights("model.vision.weight", torch.ones(1))
    with pytest.raises(ModelLoadError, match="'vocab_size'"):
        adapter.config_from_hf(
            {k: v for k, v in HF.items() if k != "vocab_size"} | {"architectures": ["L"]}
        )
