"""Adapters of Qwen3, Qwen3-MoE, Mixtral, Gemma 2/3 and Phi-3: config fields read from configs
as the Hub ships them (and as transformers 5 saves them), and weight names."""

from __future__ import annotations

import pytest
import torch
from lmforge.errors import ModelLoadError
from lmforge.model.adapters.gemma import Gemma2Adapter, Gemma3Adapter
from lmforge.model.adapters.mixtral import MixtralAdapter
from lmforge.model.adapters.phi3 import Phi3Adapter
from lmforge.model.adapters.qwen3 import Qwen3Adapter
from lmforge.model.adapters.qwen3_moe import Qwen3MoeAdapter
from lmforge.model.config import FULL, SLIDING
from lmforge.model.linear import pack_awq, unpack_awq

HF = dict(num_hidden_layers=6, hidden_size=16, num_attention_heads=4, num_key_value_heads=2,
          intermediate_size=32, vocab_size=10)


def names(adapter, name: str, tensor: torch.Tensor | None = None) -> list[str]:
    return [n for n, _ in adapter.map_weights(name, torch.ones(1) if tensor is None else tensor)]


def test_qwen3_norms_heads_and_windows_only_where_asked():
    adapter = Qwen3Adapter()
    config = adapter.config_from_hf({**HF, "architectures": ["Qwen3ForCausalLM"],
                                     "sliding_window": 8, "use_sliding_window": False})
    assert config.qk_norm and not config.qkv_bias
    assert [config.layer_window(i) for i in range(6)] == [None] * 6
    config = adapter.config_from_hf({**HF, "architectures": ["Q"], "sliding_window": 8,
                                     "use_sliding_window": True, "max_window_layers": 4})
    assert [config.layer_window(i) for i in range(6)] == [None] * 4 + [8, 8]
    assert names(adapter, "model.layers.2.self_attn.k_norm.weight") == ["layers.2.attn.k_norm"]
    with pytest.raises(ModelLoadError, match="'chunked_attention'"):
        adapter.config_from_hf({**HF, "architectures": ["Q"], "sliding_window": 8,
                                "use_sliding_window": True,
                                "layer_types": ["chunked_attention"] * 6})


def test_qwen3_moe_experts_router_and_dense_layers():
    adapter = Qwen3MoeAdapter()
    hub = {**HF, "architectures": ["Qwen3MoeForCausalLM"], "num_experts": 128,
           "num_experts_per_tok": 8, "moe_intermediate_size": 12, "norm_topk_prob": True,
           "decoder_sparse_step": 2, "mlp_only_layers": [5]}
    moe = adapter.config_from_hf(hub).moe
    assert (moe.num_experts, moe.top_k, moe.intermediate_size, moe.renormalize) == (
        128, 8, 12, True)
    # Layers 0, 2 and 4 are off the stride of 2; layer 5 is listed as dense.
    assert moe.dense_layers == (0, 2, 4, 5)
    # transformers 5 writes the expert count as num_local_experts.
    saved = {k: v for k, v in hub.items() if k != "num_experts"} | {"num_local_experts": 4}
    assert adapter.config_from_hf(saved).moe.num_experts == 4
    assert adapter.config_from_hf({**hub, "num_experts": 0}).moe is None
    assert names(adapter, "model.layers.1.mlp.gate.weight") == ["layers.1.mlp.router.weight"]
    assert names(adapter, "model.layers.1.mlp.experts.17.up_proj.weight") == [
        "layers.1.mlp.experts.17.up.weight"]
    assert names(adapter, "model.layers.0.mlp.down_proj.weight") == ["layers.0.mlp.down.weight"]
    with pytest.raises(ModelLoadError, match="'moe_intermediate_size'"):
        adapter.config_from_hf({k: v for k, v in hub.items() if k != "moe_intermediate_size"})


def test_mixtral_experts_always_renormalized():
    adapter = MixtralAdapter()
    config = adapter.config_from_hf({**HF, "architectures": ["MixtralForCausalLM"],
                                     "num_local_experts": 8, "num_experts_per_tok": 2,
                                     "sliding_window": None})
    assert config.moe.renormalize and config.moe.intermediate_size == 32
    assert config.sliding_window is None
    assert names(adapter, "model.layers.3.block_sparse_moe.experts.7.w2.weight") == [
        "layers.3.mlp.experts.7.down.weight"]
    assert names(adapter, "model.layers.3.block_sparse_moe.gate.weight") == [
        "layers.3.mlp.router.weight"]
    with pytest.raises(ModelLoadError, match="block_sparse_moe.experts.7.w4"):
        names(adapter, "model.layers.3.block_sparse_moe.experts.7.w4.weight")


# gemma-2-9b-it's config.json as the Hub ships it (layer sizes shrunk): no layer_types and no
# tie_word_embeddings, both of which transformers defaults.
GEMMA2_HUB = {**HF, "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
              "head_dim": 8, "hidden_act": "gelu_pytorch_tanh",
              "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 144,
              "sliding_window": 4096, "final_logit_softcapping": 30.0,
              "attn_logit_softcapping": 50.0, "rope_theta": 10000.0}


def test_gemma2_fields():
    adapter = Gemma2Adapter()
    c = adapter.config_from_hf(GEMMA2_HUB)
    assert (c.hidden_act, c.norm_offset, c.sandwich_norms, c.tie_word_embeddings) == (
        "gelu_tanh", 1.0, True, True)
    assert c.embed_scale == 16**0.5 and c.softmax_scale == 144**-0.5
    assert (c.attn_logit_softcap, c.final_logit_softcap) == (50.0, 30.0)
    assert c.layer_types == (SLIDING, FULL) * 3
    assert [c.layer_window(i) for i in range(2)] == [4096, None]
    assert names(adapter, "model.layers.0.pre_feedforward_layernorm.weight") == [
        "layers.0.post_attn_norm"]
    assert names(adapter, "model.layers.0.post_attention_layernorm.weight") == [
        "layers.0.attn_output_norm"]
    with pytest.raises(ModelLoadError, match="use_bidirectional_attention"):
        adapter.config_from_hf({**GEMMA2_HUB, "use_bidirectional_attention": True})


def test_gemma3_ropes_old_and_new_configs():
    adapter = Gemma3Adapter()
    old = {**GEMMA2_HUB, "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
           "rope_theta": 1e6, "rope_local_base_freq": 1e4, "sliding_window": 512,
           "rope_scaling": {"rope_type": "linear", "factor": 8.0}}
    c = adapter.config_from_hf(old)
    assert c.qk_norm and c.attn_logit_softcap is None  # transformers never caps Gemma 3's scores
    assert c.layer_types == (SLIDING,) * 5 + (FULL,)
    assert (c.rope.theta, c.rope.scaling_type, c.rope.factor) == (1e6, "linear", 8.0)
    assert (c.local_rope.theta, c.local_rope.scaling_type) == (1e4, None)
    assert c.layer_rope(0) is c.local_rope and c.layer_rope(5) is c.rope
    new = {k: v for k, v in old.items() if k not in ("rope_theta", "rope_local_base_freq",
                                                       "rope_scaling")}
    new["rope_parameters"] = {
        FULL: {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        SLIDING: {"rope_type": "default", "rope_theta": 1e4}}
    c = adapter.config_from_hf(new)
    assert (c.rope.theta, c.rope.factor, c.local_rope.theta) == (1e6, 8.0, 1e4)


def test_phi3_splits_fused_projections_of_every_weight_kind():
    adapter = Phi3Adapter()
    config = adapter.config_from_hf({**HF, "architectures": ["Phi3ForCausalLM"],
                                     "sliding_window": 2047})
    q, kv, inter = config.q_size, config.kv_size, config.intermediate_size
    assert config.sliding_window == 2047 and config.layer_window(5) == 2047
    rows = torch.arange(q + 2 * kv, dtype=torch.float32)[:, None].expand(-1, 16)
    parts = dict(adapter.map_weights("model.layers.1.self_attn.qkv_proj.weight", rows))
    assert list(parts) == [f"layers.1.attn.{h}.weight" for h in "qkv"]
    torch.testing.assert_close(parts["layers.1.attn.k.weight"], rows[q:q + kv])
    # AWQ: qweight [K, N/8] packs 8 outputs per int32 along its columns.
    values = torch.arange(2 * inter)[None, :].expand(16, -1) % 16
    parts = dict(adapter.map_weights("model.layers.1.mlp.gate_up_proj.qweight",
                                     pack_awq(values)))
    torch.testing.assert_close(unpack_awq(parts["layers.1.mlp.up.qweight"]),
                               values[:, inter:].to(torch.int32))
    with pytest.raises(ModelLoadError, match="partial_rotary_factor 0.75"):
        adapter.config_from_hf({**HF, "architectures": ["P"], "partial_rotary_factor": 0.75})
