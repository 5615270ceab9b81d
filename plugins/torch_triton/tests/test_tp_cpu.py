"""Tensor parallelism on the CPU (gloo): tp ranks as processes give transformers' logits and
greedy tokens, for every checkpoint layout and weight kind the engine reads."""

from __future__ import annotations

import pytest
from lmforge.messages import PytorchEngineConfig
from lmforge.model.loader import load_model_info
from lmforge_torch_triton.runner import TorchModelRunner

# The runner's tests against transformers, collected again here over this module's ``case``:
# the same checks with tp ranks.
from test_runner_models import (  # noqa: F401
    test_chunked_prefill_beside_a_decode,
    test_greedy_decode_matches_generate,
    test_prefill_logits_match_transformers,
    test_prefix_cache_hit,
)
from torch_runner_helpers import save_hf_model, save_internlm2


def tp_runner(path, tp: int) -> TorchModelRunner:
    """A runner of ``tp`` CPU ranks (one tensor-parallel engine per process at a time)."""
    return TorchModelRunner(load_model_info(path),
                            PytorchEngineConfig(device="cpu", dtype="float32", tp=tp))


# (checkpoint, tp): safetensors read as slices across files, .bin, InternLM2's fused qkv (read
# whole, then cut), tied embeddings with a vocabulary that does not divide, more ranks than
# K/V heads (each K/V head on two ranks), and two families beyond Llama.
CASES = {
    "llama-sharded-tp2": (lambda d: save_hf_model("llama", d, fmt="sharded"), 2),
    "qwen2-bin-tp2": (lambda d: save_hf_model("qwen2", d, fmt="bin"), 2),
    "internlm2-tp2": (save_internlm2, 2),
    "llama-tied-vocab125-tp2": (
        lambda d: save_hf_model("llama", d, tie_word_embeddings=True, vocab_size=125), 2),
    "llama-tp4": (lambda d: save_hf_model("llama", d), 4),
    # Every expert split by its features, the router whole; per-head q/k norms on each rank.
    "qwen3_moe-tp2": (lambda d: save_hf_model("qwen3_moe", d), 2),
    # Norms after attention and the MLP, applied to the summed outputs; soft-capping.
    "gemma2-tp2": (lambda d: save_hf_model("gemma2", d), 2),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    save, tp = CASES[request.param]
    path = tmp_path_factory.mktemp(request.param)
    reference = save(path)
    runner = tp_runner(path, tp)
    assert len(runner.workers.procs) == tp - 1
    yield runner, reference
    runner.close()
