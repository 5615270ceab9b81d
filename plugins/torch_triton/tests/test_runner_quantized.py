"""Quantized checkpoints load into their weight kinds, and the CPU (reference) ops give the logits
transformers gives on the same weights dequantized."""

from __future__ import annotations

import pytest
import torch
from lmforge import GenerationConfig, PytorchEngineConfig, pipeline
from lmforge.errors import ModelLoadError
from lmforge.model.linear import AWQLinear, W8A8Linear
from lmforge.model.loader import load_model_info
from quant_checkpoints import add_tiny_tokenizer, save_awq_model, save_w8a8_model
from test_runner_models import PROMPTS
from torch_runner_helpers import PagedDriver, PagedSeq, hf_greedy, hf_logits, make_runner


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def _prefill_logits(path) -> torch.Tensor:
    driver = PagedDriver(make_runner(path))
    return driver.step([(PagedSeq(), p) for p in PROMPTS], return_all_logits=True)


def test_awq_checkpoint_loads_as_awq_and_matches_transformers(tmp_path):
    reference = save_awq_model(tmp_path)
    info = load_model_info(tmp_path)
    assert (info.quant.method, info.quant.group_size) == ("awq", 32)
    runner = make_runner(tmp_path)
    layer = runner.model.weights.layers[0]
    assert all(isinstance(w, AWQLinear) for w in (layer.qkv, layer.o, layer.gate_up, layer.down))
    # The dequantized weights are exactly the reference's: logits agree to fp32 rounding.
    expected = torch.cat([hf_logits(reference, p) for p in PROMPTS])
    torch.testing.assert_close(_prefill_logits(tmp_path), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["qwen3", "gemma2"])
def test_awq_checkpoints_of_other_families(tmp_path, kind):
    """AWQ checkpoints of Qwen3 (q/k norms beside int4 projections) and Gemma 2 (GeGLU over an
    int4 gate-up, norms after attention and the MLP)."""
    reference = save_awq_model(tmp_path, kind=kind)
    runner = make_runner(tmp_path)
    assert isinstance(runner.model.weights.layers[1].gate_up, AWQLinear)
    expected = torch.cat([hf_logits(reference, p) for p in PROMPTS])
    torch.testing.assert_close(_prefill_logits(tmp_path), expected, rtol=1e-4, atol=1e-4)


def test_awq_greedy_tokens_through_the_engine(tmp_path):
    reference = save_awq_model(tmp_path)
    add_tiny_tokenizer(tmp_path)
    config = PytorchEngineConfig(device="cpu", dtype="float32", block_size=4,
                                 cache_max_entry_count=64)
    with pipeline(str(tmp_path), backend_config=config) as pipe:
        got = pipe(PROMPTS, gen_config=GenerationConfig(max_new_tokens=12, ignore_eos=True))
    assert [r.token_ids for r in got] == [hf_greedy(reference, p, 12) for p in PROMPTS]


# Per-token 8-bit activations round each input to ~1/254 (int8) or 2^-4 (fp8 e4m3) of its row's
# absolute maximum; through two tiny layers that leaves the logits this close (relative L2).
FP8 = torch.float8_e4m3fn
W8A8_TOLERANCE = {torch.int8: 2e-2, FP8: 8e-2}


@pytest.mark.parametrize("layout", ["compressed-tensors", "lmdeploy"])
@pytest.mark.parametrize("dtype", [torch.int8, FP8], ids=["int8", "fp8"])
def test_w8a8_checkpoint_loads_as_w8a8_and_matches_transformers(tmp_path, layout, dtype):
    reference = save_w8a8_model(tmp_path, layout, dtype)
    info = load_model_info(tmp_path)
    assert (info.quant.method, info.quant.dtype) == (
        "w8a8", "int8" if dtype == torch.int8 else "fp8_e4m3")
    runner = make_runner(tmp_path)
    layer = runner.model.weights.layers[1]
    assert all(isinstance(w, W8A8Linear) and w.weight.dtype == dtype
               for w in (layer.qkv, layer.o, layer.gate_up, layer.down))
    expected = torch.cat([hf_logits(reference, p) for p in PROMPTS])
    error = _relative_error(_prefill_logits(tmp_path), expected)
    assert error < W8A8_TOLERANCE[dtype], error


def test_w8a8_activation_quantization_is_what_moves_the_logits(tmp_path):
    """Against the same weights with exact activations, the error is the activation rounding's,
    not a layout mistake: it shrinks to zero when the activations need no rounding."""
    save_w8a8_model(tmp_path, "compressed-tensors")
    runner = make_runner(tmp_path)
    w = runner.model.weights.layers[0].o
    x = torch.randint(-127, 128, (3, w.in_features)).float()  # already on the int8 grid
    x[:, 0] = 127.0  # every row's absmax is 127: its scale is exactly 1
    torch.testing.assert_close(w.reference(x), x @ w.dequantize().t(), rtol=1e-6, atol=1e-3)


def test_unsupported_quantization_is_refused_in_one_sentence(tmp_path):
    save_awq_model(tmp_path)
    import json

    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="gptq: an unknown method"):
        load_model_info(tmp_path)
    config["quantization_config"] = {"quant_method": "awq", "bits": 4, "version": "gemv"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="the gemv packing"):
        load_model_info(tmp_path)
