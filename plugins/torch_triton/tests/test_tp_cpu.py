"""Tensor parallelism on the CPU (gloo): tp ranks as processes give transformers' logits and
greedy tokens, for every checkpoint layout and weight kind the engine reads."""

from __future__ import annotations

import pytest
import torch
from lmforge.messages import PytorchEngineConfig
from lmforge.model.loader import load_model_info
from lmforge_torch_triton.runner import TorchModelRunner
from test_runner_models import PROMPTS, TOL
from torch_runner_helpers import (
    PagedDriver,
    PagedSeq,
    greedy,
    hf_greedy,
    hf_logits,
    save_hf_model,
    save_internlm2,
)


def tp_runner(path, tp: int) -> TorchModelRunner:
    """A runner of ``tp`` CPU ranks (one tensor-parallel engine per process at a time)."""
    return TorchModelRunner(load_model_info(path),
                            PytorchEngineConfig(device="cpu", dtype="float32", tp=tp))


# (checkpoint, tp): safetensors read as slices across files, .bin, InternLM2's fused qkv (read
# whole, then cut), tied embeddings with a vocabulary that does not divide, and more ranks than
# K/V heads (each K/V head on two ranks).
CASES = {
    "llama-sharded-tp2": (lambda d: save_hf_model("llama", d, fmt="sharded"), 2),
    "qwen2-bin-tp2": (lambda d: save_hf_model("qwen2", d, fmt="bin"), 2),
    "internlm2-tp2": (save_internlm2, 2),
    "llama-tied-vocab125-tp2": (
        lambda d: save_hf_model("llama", d, tie_word_embeddings=True, vocab_size=125), 2),
    "llama-tp4": (lambda d: save_hf_model("llama", d), 4),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    save, tp = CASES[request.param]
    path = tmp_path_factory.mktemp(request.param)
    reference = save(path)
    runner = tp_runner(path, tp)
    yield runner, reference
    runner.close()


def test_tp_prefill_logits_match_transformers(case):
    runner, reference = case
    assert runner.workers is not None and len(runner.workers.procs) == runner.model.comm.size - 1
    logits = PagedDriver(runner).step([(PagedSeq(), p) for p in PROMPTS], return_all_logits=True)
    expected = torch.cat([hf_logits(reference, p) for p in PROMPTS])
    torch.testing.assert_close(logits, expected, **TOL)


def test_tp_greedy_decode_matches_generate(case):
    runner, reference = case
    outputs = greedy(PagedDriver(runner), PROMPTS, steps=12)
    assert outputs == [hf_greedy(reference, p, 12) for p in PROMPTS]


def test_tp_chunked_prefill_beside_a_decode(case):
    runner, reference = case
    driver = PagedDriver(runner)
    prompt, other = PROMPTS
    seq, decoding = PagedSeq(), PagedSeq()
    driver.step([(decoding, other)])
    assert driver.step([(seq, prompt[:6])], need_logits=[False]).shape[0] == 0
    logits = driver.step([(seq, prompt[6:]), (decoding, [3])])
    torch.testing.assert_close(logits[0], hf_logits(reference, prompt)[-1], **TOL)
    torch.testing.assert_close(logits[1], hf_logits(reference, other + [3])[-1], **TOL)
