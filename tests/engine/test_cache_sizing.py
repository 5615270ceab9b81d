"""Sizing the K/V pool in tokens or memory: units, the session check, the fit check against
the weights, and where a bad value is refused (config, CLI, before any weight loads)."""

from __future__ import annotations

import pytest
from lmforge import PytorchEngineConfig, pipeline
from lmforge.engine.cache_sizing import (
    MemoryEstimate,
    describe_pool,
    gib,
    parse_memory,
    plan_pool,
)
from lmforge.engine.settings import EngineSettings
from lmforge.errors import ConfigError
from lmforge.messages import TurbomindEngineConfig


@pytest.mark.parametrize("text,size", [
    ("16GiB", 16 * 2**30), ("16 gib", 16 * 2**30), ("1.5GB", 1_500_000_000),
    ("512MiB", 512 * 2**20), ("800MB", 800_000_000), ("4096B", 4096), ("1TiB", 2**40),
])
def test_parse_memory_units(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text,message", [
    ("16", "'16' has no unit; write e.g. 16GiB"),
    ("16XB", "unknown unit 'XB' in '16XB'; the units are B, KB, MB, GB, TB, KiB, MiB, GiB, TiB"),
    ("lots", "give a number and a unit"),
    ("0GiB", "must be more than 0 bytes"),
])
def test_parse_memory_names_the_units_that_work(text, message):
    with pytest.raises(ConfigError, match="Invalid value for kv_cache_memory: .*" + message):
        parse_memory(text)


def settings(**kw) -> EngineSettings:
    return EngineSettings.from_config(PytorchEngineConfig(block_size=64, **kw))


ESTIMATE = MemoryEstimate(kv_bytes_per_token=131072, weight_bytes=16 * 2**30,
                          free_bytes=140 * 2**30, reserve_bytes=2 * 2**30, device="cuda:0")


def test_plan_pool_in_tokens_and_memory():
    assert plan_pool(settings(), 8192, ESTIMATE) is None  # a fraction: the runner decides
    assert plan_pool(settings(max_kv_tokens=200_000), 8192, ESTIMATE) == 3125
    assert plan_pool(settings(max_kv_tokens=8193), 8192, 131072) == 129  # rounded up
    # 7.8 GiB of bf16 Llama-3-8B K/V: 63,897 tokens, in whole blocks of 64.
    assert plan_pool(settings(kv_cache_memory="7.8GiB"), 8192, ESTIMATE) == 998


def test_a_pool_smaller_than_a_session_is_refused():
    with pytest.raises(ConfigError, match=r"--max-kv-tokens: the K/V cache would hold 4,096 "
                       r"tokens, less than one session of session_len 8,192; give at least "
                       r"8,192 tokens \(1.00 GiB at quant_policy 0\), or lower --session-len"):
        plan_pool(settings(max_kv_tokens=4096), 8192, ESTIMATE)
    with pytest.raises(ConfigError, match="--kv-cache-memory: the K/V cache would hold 0 tokens"):
        plan_pool(settings(kv_cache_memory="1MiB"), 8192, ESTIMATE)


def test_a_pool_beside_the_weights_that_does_not_fit_says_what_fits():
    with pytest.raises(ConfigError) as error:
        plan_pool(settings(kv_cache_memory="130GiB"), 8192, ESTIMATE)
    message = str(error.value)
    assert message.startswith("Invalid value for --kv-cache-memory: 1,064,960 tokens of K/V "
                              "cache (130.00 GiB at quant_policy 0), the weights (about 16.00 "
                              "GiB) and working memory (2.00 GiB) need 148.00 GiB, more than "
                              "the 140.00 GiB free on cuda:0; at most 999,424 tokens")
    assert message.endswith("(122.00 GiB) fit.")
    # int8 fits the same token count in about half the memory.
    int8 = MemoryEstimate(**{**ESTIMATE.__dict__, "kv_bytes_per_token": 2 * 32 * 8 * 136})
    assert plan_pool(settings(max_kv_tokens=1_064_960, quant_policy=8), 8192, int8) == 16640


def test_describe_pool():
    assert describe_pool(998, 64, 64 * 131072, 0) == (
        "K/V cache: 63,872 tokens in 998 blocks of 64, 7.80 GiB, unquantized (quant_policy 0)")
    assert describe_pool(10, 16, None, 4).endswith("blocks of 16, int4 (quant_policy 4)")
    assert gib(3 * 2**29) == "1.50 GiB"


def test_config_classes_check_the_new_fields():
    for cls in (PytorchEngineConfig, TurbomindEngineConfig):
        assert cls(kv_cache_memory="16GiB").kv_cache_memory == "16GiB"
        with pytest.raises(ConfigError, match="not both"):
            cls(kv_cache_memory="16GiB", max_kv_tokens=1000)
        with pytest.raises(ConfigError, match="max_kv_tokens"):
            cls(max_kv_tokens=0)
        with pytest.raises(ConfigError, match="unknown unit 'G'"):
            cls(kv_cache_memory="16G")
        with pytest.raises(ConfigError, match="quant_policy: 3; must be 0, 4 or 8"):
            cls(quant_policy=3)


def test_a_pool_that_cannot_fit_is_refused_before_the_weights_load(tiny_llama_dir, monkeypatch):
    from lmforge_torch_triton import runner as runner_module

    loads = []
    monkeypatch.setattr(runner_module, "load_decoder_weights",
                        lambda *a: loads.append(a) or pytest.fail("weights loaded"))
    monkeypatch.setattr(runner_module, "available_host_memory", lambda: 2 * 2**30)
    config = PytorchEngineConfig(dtype="float32", kv_cache_memory="5GiB")
    with pytest.raises(ConfigError, match="more than the 2.00 GiB free on the host"):
        pipeline(str(tiny_llama_dir), backend_config=config)
    with pytest.raises(ConfigError, match="less than one session of session_len 2,048"):
        pipeline(str(tiny_llama_dir), backend_config=PytorchEngineConfig(max_kv_tokens=100))
    assert loads == []


def test_cli_names_the_allowed_values(tmp_path):
    from lmforge.cli.app import create_app
    from typer.testing import CliRunner

    runner = CliRunner()
    bad_policy = runner.invoke(create_app(), ["chat", "--quant-policy", "3"],
                               env={"COLUMNS": "200"})
    assert bad_policy.exit_code == 2
    assert "'3' is not one of '0', '4', '8'" in bad_policy.output
    bad_unit = runner.invoke(create_app(), ["chat", "--kv-cache-memory", "16XB"])
    assert bad_unit.exit_code == 1
    assert "the units are B, KB, MB, GB, TB, KiB, MiB, GiB, TiB" in bad_unit.output
    assert "Traceback" not in bad_unit.output
