"""ShardPlan: which slices a rank holds, and which tp sizes the engine refuses before loading."""

from __future__ import annotations

import pytest
import torch
from lmforge.errors import ConfigError
from lmforge.messages import PytorchEngineConfig
from lmforge.model.config import ModelConfig
from lmforge.model.linear import IN, OUT
from lmforge_torch_triton.parallel.plan import ShardPlan, unsupported_reason
from lmforge_torch_triton.plugin import is_supported

CONFIG = ModelConfig(architecture="LlamaForCausalLM", num_layers=2, hidden_size=64,
                     num_heads=8, num_kv_heads=2, head_dim=8, intermediate_size=96,
                     vocab_size=125)


def test_heads_split_and_kv_heads_replicate_where_there_are_fewer():
    plans = [ShardPlan(CONFIG, r, 4) for r in range(4)]
    assert [p.kv_index for p in plans] == [0, 0, 1, 1]
    local = plans[3].local_config()
    assert (local.num_heads, local.num_kv_heads, local.intermediate_size) == (2, 1, 24)
    assert (local.hidden_size, local.vocab_size) == (64, 125)
    assert plans[3].linear_split("attn.q") == (OUT, 3, 4, 64)
    assert plans[3].linear_split("attn.k") == (OUT, 1, 2, 16)
    assert plans[3].linear_split("mlp.down") == (IN, 3, 4, 96)
    assert plans[3].linear_split("mlp.gate") == (OUT, 3, 4, 96)
    two = ShardPlan(CONFIG, 1, 2)
    assert (two.kv_index, two.local_config().num_kv_heads) == (1, 1)


def test_select_cuts_each_weight():
    plan = ShardPlan(CONFIG, 1, 2)
    h = CONFIG.hidden_size
    assert plan.select("layers.0.attn.q.weight", (64, h)) == (0, 32, 64)
    assert plan.select("layers.0.attn.k.weight", (16, h)) == (0, 8, 16)
    assert plan.select("layers.0.attn.o.weight", (h, 64)) == (1, 32, 64)
    assert plan.select("layers.1.mlp.up.bias", (96,)) == (0, 48, 96)
    assert plan.select("layers.1.mlp.down.bias", (h,)) is None
    assert plan.select("layers.1.input_norm", (h,)) is None
    assert plan.select("norm", (h,)) is None
    # 125 rows over 2 ranks: 63 each, the last one short by one (padded when loaded).
    assert plan.vocab_rows == 63
    assert plan.select("embed", (125, h)) == (0, 63, 125)
    assert ShardPlan(CONFIG, 0, 2).select("lm_head", (125, h)) == (0, 0, 63)
    assert not plan.keeps_bias("attn.o") and plan.keeps_bias("attn.q")
    assert ShardPlan(CONFIG, 0, 2).keeps_bias("mlp.down")


def test_awq_tensors_are_cut_in_their_own_units():
    plan = ShardPlan(CONFIG, 1, 2, awq_group_size=16)
    assert plan.select("layers.0.attn.q.qweight", (64, 8)) == (1, 4, 8)
    assert plan.select("layers.0.mlp.down.qweight", (96, 8)) == (0, 48, 96)
    assert plan.select("layers.0.mlp.down.scales", (6, 64)) == (0, 3, 6)
    assert plan.select("layers.0.mlp.down.qzeros", (6, 8)) == (0, 3, 6)


@pytest.mark.parametrize(("tp", "group", "reason"), [
    (2, None, ""),
    (4, None, ""),
    (8, None, ""),
    (3, None, "does not divide the model's 8 attention heads"),
    (16, None, "does not divide the model's 8 attention heads"),
    (2, 16, ""),
    (2, 32, "each rank's 48 MLP features are not whole AWQ groups of 32"),
    (2, 64, "not whole AWQ groups of 64"),
])
def test_unsupported_reason(tp, group, reason):
    got = unsupported_reason(CONFIG, tp, group)
    assert (reason in got) if reason else got == ""


def test_kv_heads_that_neither_divide_nor_are_divided():
    config = ModelConfig(architecture="LlamaForCausalLM", num_layers=1, hidden_size=96,
                         num_heads=12, num_kv_heads=3, head_dim=8, intermediate_size=96,
                         vocab_size=10)
    assert "key/value heads" in unsupported_reason(config, 2)
    assert unsupported_reason(config, 3) == "" and unsupported_reason(config, 6) == ""


class _Info:
    config = CONFIG
    quant = None


def test_engine_refuses_tp_that_does_not_divide_the_heads():
    ok, reason = is_supported(_Info(), PytorchEngineConfig(tp=3, device="cpu"))
    assert not ok and "8 attention heads" in reason


def test_engine_refuses_more_ranks_than_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    ok, reason = is_supported(_Info(), PytorchEngineConfig(tp=2))
    assert not ok and reason.startswith("tp=2 needs 2 GPUs but 1 is visible")
    ok, reason = is_supported(_Info(), PytorchEngineConfig(tp=2, device="cuda:1"))
    assert not ok and "CUDA_VISIBLE_DEVICES" in reason
    assert is_supported(_Info(), PytorchEngineConfig(tp=2, device="cpu")) == (True, "")


def test_the_core_refuses_before_loading(tmp_path):
    import json

    from lmforge.engine.builder import build_async_engine

    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32,
              "hidden_size": 48, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 6, "num_key_value_heads": 2}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="cannot run this model: tp=4 does not divide"):
        build_async_engine(str(tmp_path), backend_config=PytorchEngineConfig(
            tp=4, device="cpu", load_format="dummy"))
    with pytest.raises(ConfigError, match="does not support tp=5"):
        build_async_engine(str(tmp_path), backend_config=PytorchEngineConfig(
            tp=5, device="cpu", load_format="dummy"))


def test_experts_split_by_their_features_and_the_router_is_whole():
    from dataclasses import replace

    from lmforge.model.config import MoEConfig

    moe = replace(CONFIG, moe=MoEConfig(num_experts=4, top_k=2, intermediate_size=40))
    plan = ShardPlan(moe, 1, 2)
    assert plan.local_config().moe.intermediate_size == 20
    assert plan.select("layers.0.mlp.experts.3.gate.weight", (40, 64)) == (0, 20, 40)
    assert plan.select("layers.0.mlp.experts.0.down.weight", (64, 40)) == (1, 20, 40)
    assert plan.select("layers.0.mlp.router.weight", (4, 64)) is None
    assert plan.select("layers.0.attn.q_norm", (8,)) is None
    odd = replace(CONFIG, moe=MoEConfig(num_experts=4, top_k=2, intermediate_size=44))
    assert "experts' 44 features" in unsupported_reason(odd, 8)


def test_engine_refuses_quantized_experts():
    from dataclasses import replace

    from lmforge.model.config import MoEConfig
    from lmforge.model.quant import QuantConfig

    class Info:
        config = replace(CONFIG, moe=MoEConfig(num_experts=4, top_k=2, intermediate_size=40))
        quant = QuantConfig(method="awq", dtype="int4", bits=4, group_size=128)

    ok, reason = is_supported(Info(), PytorchEngineConfig(device="cpu"))
    assert not ok and "AWQ int4 (group size 128)" in reason and "mixture-of-experts" in reason
