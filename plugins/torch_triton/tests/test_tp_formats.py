"""Tensor parallelism on the CPU over the other weight formats: quantized checkpoints shard per
weight kind (AWQ in whole packs and groups, W8A8 by rows), GGUF one dequantized tensor at a time."""

from __future__ import annotations

import pytest
import torch
from lmforge.messages import PytorchEngineConfig
from lmforge.model.linear import AWQLinear, W8A8Linear
from lmforge.model.loader import load_model_info
from lmforge_torch_triton.runner import TorchModelRunner
from quant_checkpoints import save_awq_model, save_w8a8_model
from test_runner_gguf import PROMPT, smollm2_gguf  # noqa: F401 (a fixture)
from test_runner_models import PROMPTS, TOL
from test_tp_cpu import tp_runner
from torch_runner_helpers import PagedDriver, PagedSeq, greedy, hf_logits


@pytest.mark.parametrize("kind", ["awq", "w8a8"])
def test_tp_quantized_checkpoints(kind, tmp_path):
    if kind == "awq":  # groups of 16: each rank's 48 MLP inputs are 3 whole groups
        reference, weight_type = save_awq_model(tmp_path, group_size=16), AWQLinear
    else:
        reference, weight_type = save_w8a8_model(tmp_path, "compressed-tensors"), W8A8Linear
    runner = tp_runner(tmp_path, 2)
    try:
        layer = runner.model.weights.layers[0]
        assert isinstance(layer.down, weight_type) and layer.down.in_features == 48
        logits = PagedDriver(runner).step([(PagedSeq(), p) for p in PROMPTS],
                                          return_all_logits=True)
    finally:
        runner.close()
    expected = torch.cat([hf_logits(reference, p) for p in PROMPTS])
    if kind == "awq":  # the same dequantized weights: fp32 rounding apart
        torch.testing.assert_close(logits, expected, **TOL)
    else:  # each rank quantizes its slice of a token's activations: as close as tp=1 is
        assert float((logits - expected).norm() / expected.norm()) < 2e-2


@pytest.mark.slow
def test_demo_model_tp3_equals_tp1(smollm2_gguf):  # noqa: F811
    # SmolLM2-135M has 9 attention heads and 3 K/V heads: tp=3 is the split it allows.
    info = load_model_info(smollm2_gguf)
    tokens = {}
    for tp in (1, 3):
        runner = TorchModelRunner(info, PytorchEngineConfig(device="cpu", dtype="float32", tp=tp))
        try:
            driver = PagedDriver(runner, num_blocks=64, block_size=16)
            tokens[tp] = greedy(driver, [PROMPT, PROMPT[:7]], steps=12)
        finally:
            runner.close()
    assert tokens[3] == tokens[1]
