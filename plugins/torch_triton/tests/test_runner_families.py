"""TorchModelRunner against transformers on tiny random models of the families beyond Llama:
Qwen3, Gemma 2/3, Phi-3, Mixtral and Qwen3-MoE. Each case runs the Llama-family checks (logits,
batched greedy decoding, chunked prefill beside a decode, a prefix-cache hit); the sliding
windows are shorter than the prompts in some cases and longer in others."""

from __future__ import annotations

import pytest
import torch
from lmforge.messages import PytorchEngineConfig
from lmforge.model.loader import load_model_info
from lmforge.model.weights import canonical_shapes
from lmforge_torch_triton.runner import TorchModelRunner

# The runner's tests against transformers, collected again here over this module's ``case``.
from test_runner_models import (  # noqa: F401
    PROMPTS,
    test_chunked_prefill_beside_a_decode,
    test_greedy_decode_matches_generate,
    test_prefill_logits_match_transformers,
    test_prefix_cache_hit,
)
from torch_runner_helpers import (
    TINY,
    PagedDriver,
    PagedSeq,
    greedy,
    hf_greedy,
    make_runner,
    save_hf_model,
)

LONGROPE = {"rope_type": "longrope", "rope_theta": 10000.0,
            "short_factor": [1.0 + 0.1 * i for i in range(8)],
            "long_factor": [1.0 + 0.5 * i for i in range(8)]}

# The prompts are 11 and 7 tokens long, and greedy decoding runs 16 steps past them.
CASES = {
    # Per-head q/k norms; layer 1 slides over 4 tokens (use_sliding_window), layer 0 does not.
    "qwen3-sliding4-tied": dict(kind="qwen3", use_sliding_window=True, sliding_window=4,
                                max_window_layers=1, tie_word_embeddings=True),
    # Soft-capped attention and logits, local layers with a window shorter than the prompts.
    "gemma2-window6": dict(kind="gemma2"),
    # Local rope base on the sliding layers, their window longer than the sequences.
    "gemma3-window32": dict(kind="gemma3", sliding_window=32),
    # Fused qkv and gate-up; LongRoPE whose long factors start past 4 tokens (every chunk and
    # cached prefix of the shared tests is past it: see test_longrope_switches_factors...).
    "phi3-longrope": dict(kind="phi3", rope_parameters=LONGROPE,
                          original_max_position_embeddings=4, max_position_embeddings=64),
    "phi3-window5-sharded": dict(kind="phi3", sliding_window=5, fmt="sharded"),
    "mixtral-window32": dict(kind="mixtral", sliding_window=32),
    # Many small experts, weights not renormalized, layer 1 a dense MLP.
    "qwen3_moe": dict(kind="qwen3_moe"),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    reference = save_hf_model(**CASES[request.param], out=path)
    return make_runner(path), reference


def test_family_fields_reach_the_decoder(case):
    runner, reference = case
    c, hf = runner.config, reference.config
    assert runner.model_info.architecture == type(reference).__name__
    if hf.model_type in ("qwen3", "gemma3", "qwen3_moe"):
        assert c.qk_norm and runner.model.weights.layers[0].q_norm is not None
    if hf.model_type.startswith("gemma"):
        assert c.sandwich_norms and c.norm_offset == 1.0 and c.hidden_act == "gelu_tanh"
        assert c.softmax_scale == hf.query_pre_attn_scalar**-0.5
    windows = [c.layer_window(i) for i in range(c.num_layers)]
    sliding = getattr(hf, "sliding_window", None)
    if hf.model_type in ("phi3", "mixtral"):
        assert windows == [sliding] * c.num_layers
    elif sliding:
        assert windows == [sliding if t == "sliding_attention" else None for t in hf.layer_types]
    if c.moe is not None:
        layers = runner.model.weights.layers
        assert [layer.moe is not None for layer in layers] == [
            i not in getattr(hf, "mlp_only_layers", []) for i in range(c.num_layers)]


def test_weights_count_matches_the_config(case):
    runner, reference = case
    shapes = {name: shape for name, shape, _ in canonical_shapes(runner.config)}
    assert sum(torch.Size(s).numel() for s in shapes.values()) == runner.config.num_parameters
    assert runner.config.num_parameters == sum(p.numel() for p in reference.parameters())


def test_dummy_weights_load(case):
    """canonical_shapes describes the family exactly as the engine loads it."""
    runner, _ = case
    info = load_model_info(runner.model_info.path, load_format="dummy")
    dummy = TorchModelRunner(info, PytorchEngineConfig(device="cpu"))
    logits = PagedDriver(dummy).step([(PagedSeq(), PROMPTS[0])])
    assert logits.shape == (1, TINY["vocab_size"]) and torch.isfinite(logits).all()


def _hf_decode_with_cache(model, prompt: list[int], steps: int) -> list[int]:
    """Greedy tokens from transformers' forward over its K/V cache, one token a step (its
    ``generate`` instead re-encodes a Phi-3 sequence whole when it crosses the original
    context)."""
    from transformers import DynamicCache

    cache, tokens, new = DynamicCache(config=model.config), [], prompt
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([new]), past_key_values=cache, use_cache=True).logits
            tokens.append(int(logits[0, -1].argmax()))
            new = tokens[-1:]
    return tokens


def test_longrope_switches_factors_as_a_sequence_grows(tmp_path):
    """A prompt shorter than the original context decodes past it: from then on its new tokens
    take the long factors while the keys already cached keep the short ones, as transformers'
    forward over its cache computes them. (transformers' ``generate`` re-encodes the whole
    sequence at that point, which an engine would pay a new prefill for; lmforge does not.)"""
    reference = save_hf_model("phi3", tmp_path, rope_parameters=LONGROPE,
                              original_max_position_embeddings=8, max_position_embeddings=64)
    runner = make_runner(tmp_path)
    short = PROMPTS[1][:5]
    assert greedy(PagedDriver(runner), [short, PROMPTS[0]], 12) == [
        _hf_decode_with_cache(reference, short, 12), hf_greedy(reference, PROMPTS[0], 12)]


def test_moe_renormalized_weights_and_no_dense_layers(tmp_path):
    reference = save_hf_model("qwen3_moe", tmp_path, norm_topk_prob=True, mlp_only_layers=[])
    runner = make_runner(tmp_path)
    assert runner.config.moe.renormalize and runner.config.moe.dense_layers == ()
    assert greedy(PagedDriver(runner), PROMPTS, 8) == [hf_greedy(reference, p, 8)
                                                       for p in PROMPTS]
