"""Runner construction: engine registration, dtype/device choice, cache sizing, dummy weights."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from lmforge.errors import ConfigError
from lmforge.messages import PytorchEngineConfig
from lmforge.model.loader import load_model_info
from lmforge.registry import get_engine, load_object
from lmforge_torch_triton import ops
from lmforge_torch_triton import runner as runner_module
from lmforge_torch_triton.ops import reference
from lmforge_torch_triton.runner import TorchModelRunner, resolve_dtype
from torch_runner_helpers import TINY, PagedDriver, PagedSeq, save_hf_model


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    save_hf_model("llama", path)
    return load_model_info(path)


def test_engine_is_registered_without_importing_torch_at_plugin_import():
    spec = get_engine("pytorch")
    assert load_object(spec.runner) is TorchModelRunner
    assert load_object(spec.config_class) is PytorchEngineConfig
    module = sys.modules["lmforge_torch_triton.plugin"]
    assert "torch" not in module.__dict__


def test_engine_declares_what_it_supports(info):
    from lmforge.engine.support import check_model, check_settings

    spec = get_engine("pytorch")
    check_model(spec, info, PytorchEngineConfig(device="cpu"))
    with pytest.raises(ConfigError, match="does not support device=mps; it supports device cuda, cpu"):
        check_settings(spec, PytorchEngineConfig(device="mps"))


def test_auto_dtype_and_device(info):
    runner = TorchModelRunner(info, PytorchEngineConfig(device="cpu"))
    assert (runner.device.type, runner.dtype) == ("cpu", torch.float32)
    assert resolve_dtype("auto", "bfloat16", torch.device("cuda")) is torch.bfloat16
    assert resolve_dtype("auto", "float32", torch.device("cuda")) is torch.float16
    assert resolve_dtype("bfloat16", "float16", torch.device("cpu")) is torch.bfloat16


def test_cpu_ops_are_the_reference_ones():
    table = ops.get_ops("cpu")
    assert table.paged_prefill_attention is reference.paged_prefill_attention
    assert set(ops.OP_NAMES) >= {"rms_norm", "linear_dense", "paged_decode_attention"}


def test_num_cache_blocks(info, monkeypatch):
    runner = TorchModelRunner(info, PytorchEngineConfig(device="cpu"))
    c = info.config
    per_block = 2 * c.num_layers * 16 * c.num_kv_heads * c.head_dim * 4
    assert runner.cache_block_bytes(16) == per_block
    assert runner.num_cache_blocks(16, 300) == 300
    monkeypatch.setattr(runner_module, "available_host_memory", lambda: 100 * per_block)
    assert runner.num_cache_blocks(16, 0.5) == 50
    # With memory to spare, the CPU's pool holds four sessions, not a share of the host.
    monkeypatch.setattr(runner_module, "available_host_memory", lambda: 1 << 50)
    sessions = runner_module.CPU_DEFAULT_SESSIONS * info.session_len // 16
    assert runner.num_cache_blocks(16, 0.5) == sessions
    monkeypatch.setattr(runner_module, "available_host_memory", lambda: 0)
    with pytest.raises(ConfigError, match="cache_max_entry_count"):
        runner.num_cache_blocks(16, 0.5)
    fixed = TorchModelRunner(info, PytorchEngineConfig(device="cpu", num_gpu_blocks=7))
    assert fixed.num_cache_blocks(16, 0.8) == 7


@pytest.mark.parametrize("policy,per_head", [(8, 16 + 8), (4, 8 + 8)])
def test_quantized_cache_blocks_are_smaller(info, policy, per_head):
    runner = TorchModelRunner(info, PytorchEngineConfig(device="cpu", quant_policy=policy))
    c = info.config
    assert c.head_dim == 16
    assert runner.cache_block_bytes(16) == 2 * c.num_layers * 16 * c.num_kv_heads * per_head
    runner.allocate_cache(3, 16)
    layer = runner.kv_caches[0]
    assert layer.k.dtype == torch.uint8 and layer.quant_policy == policy
    assert layer.k_scales_zeros.shape == (3, 16, c.num_kv_heads, 2)


def test_memory_estimate_before_loading(info, monkeypatch):
    monkeypatch.setattr(runner_module, "available_host_memory", lambda: 5 << 30)
    estimate = TorchModelRunner.memory_estimate(info, PytorchEngineConfig(device="cpu",
                                                                         quant_policy=8))
    c = info.config
    assert estimate.weight_bytes == c.num_parameters * 4
    assert estimate.kv_bytes_per_token == 2 * c.num_layers * c.num_kv_heads * (c.head_dim + 8)
    assert estimate.free_bytes == 5 << 30 and estimate.reserve_bytes >= runner_module.RESERVE_BYTES
    from safetensors import safe_open

    with safe_open(str(info.shards[0]), "pt") as f:
        assert c.num_parameters == sum(f.get_tensor(name).numel() for name in f.keys())


def test_a_pool_that_does_not_fit_is_refused_with_numbers(info, monkeypatch):
    runner = TorchModelRunner(info, PytorchEngineConfig(device="cpu"))
    monkeypatch.setattr(runner_module, "available_host_memory", lambda: 10 * 2**20)
    with pytest.raises(ConfigError, match=r"The 1,024,000 tokens of K/V cache \(\d+\.\d\d GiB\) "
                       r"do not fit in the 0.01 GiB free on cpu"):
        runner.allocate_cache(64000, 16)
    assert runner.kv_caches == []


def test_dummy_weights_from_config_alone(tmp_path):
    config = {**TINY, "architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    info = load_model_info(tmp_path, load_format="dummy")
    first, second = (TorchModelRunner(info, PytorchEngineConfig(device="cpu")) for _ in range(2))
    logits = [PagedDriver(r).step([(PagedSeq(), [1, 2, 3, 4, 5])]) for r in (first, second)]
    assert logits[0].shape == (1, TINY["vocab_size"]) and torch.isfinite(logits[0]).all()
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=0)


def test_warm_up_steps_run_through_the_runner(info):
    from lmforge_torch_triton.warmup import WARMUP_STEPS, warm_up

    runner = TorchModelRunner(info, PytorchEngineConfig(device="cpu"))
    # A pool large enough for every step (the sixteen long decodes take 271 blocks); a smaller
    # pool skips the steps it cannot hold.
    runner.allocate_cache(288, 64)
    batches = []

    def execute(batch):
        batches.append(batch)
        logits = runner.execute(batch)
        assert torch.isfinite(logits).all()
        return logits

    vocab = info.config.vocab_size
    warm_up(execute, block_size=64, num_blocks=288, max_blocks=32, max_step_tokens=8192,
            vocab_size=vocab)
    assert len(batches) == len(WARMUP_STEPS) + 1 and batches[-1].return_all_logits
    assert any(not b.is_decode and 1 in b.q_lens for b in batches)  # a mixed step
    warm_up(execute, block_size=64, num_blocks=3, max_blocks=32, max_step_tokens=64,
            vocab_size=vocab)
    assert all(b.num_tokens <= 64 for b in batches[len(WARMUP_STEPS) + 1:])  # what fits
