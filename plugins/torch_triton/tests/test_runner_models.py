"""TorchModelRunner against transformers on tiny random models of every built-in architecture."""

from __future__ import annotations

import pytest
import torch
from torch_runner_helpers import (
    PagedDriver,
    PagedSeq,
    greedy,
    hf_greedy,
    hf_logits,
    make_runner,
    save_hf_model,
    save_internlm2,
)

TOL = dict(rtol=1e-4, atol=1e-4)
PROMPTS = [[1, 17, 42, 99, 5, 64, 23, 88, 11, 7, 120], [1, 9, 77, 31, 56, 2, 100]]

# Each case also covers one checkpoint layout; Mistral's window is shorter than the sequences.
CASES = {
    "llama-sharded": lambda d: save_hf_model("llama", d, fmt="sharded"),
    "llama-tied": lambda d: save_hf_model("llama", d, tie_word_embeddings=True),
    "mistral-window": lambda d: save_hf_model("mistral", d, sliding_window=6),
    "qwen2-bin": lambda d: save_hf_model("qwen2", d, fmt="bin"),
    "internlm2": save_internlm2,
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    reference = CASES[request.param](path)
    return make_runner(path), reference


def test_prefill_logits_match_transformers(case):
    runner, reference = case
    driver = PagedDriver(runner)
    logits = driver.step([(PagedSeq(), p) for p in PROMPTS], return_all_logits=True)
    expected = torch.cat([hf_logits(reference, p) for p in PROMPTS])
    torch.testing.assert_close(logits, expected, **TOL)

    last = driver.step([(PagedSeq(), p) for p in PROMPTS])
    torch.testing.assert_close(last, expected[[len(PROMPTS[0]) - 1, -1]], **TOL)


def test_greedy_decode_matches_generate(case):
    runner, reference = case
    outputs = greedy(PagedDriver(runner), PROMPTS, steps=16)
    assert outputs == [hf_greedy(reference, p, 16) for p in PROMPTS]


def test_chunked_prefill_beside_a_decode(case):
    runner, reference = case
    driver = PagedDriver(runner)
    prompt, other = PROMPTS
    seq, decoding = PagedSeq(), PagedSeq()
    driver.step([(decoding, other)])
    # First chunk ends mid-block and asks for no logits; the second shares a step with a decode.
    assert driver.step([(seq, prompt[:6])], need_logits=[False]).shape[0] == 0
    logits = driver.step([(seq, prompt[6:]), (decoding, [3])])
    torch.testing.assert_close(logits[0], hf_logits(reference, prompt)[-1], **TOL)
    torch.testing.assert_close(logits[1], hf_logits(reference, other + [3])[-1], **TOL)


def test_prefix_cache_hit(case):
    runner, reference = case
    driver = PagedDriver(runner)
    first = PagedSeq()
    driver.step([(first, PROMPTS[0])])
    # A second request shares the first 8 tokens (two full blocks) and computes only its tail.
    tail = [33, 44, 55]
    hit = driver.fork_prefix(first, 8)
    logits = driver.step([(hit, tail)], return_all_logits=True)
    expected = hf_logits(reference, PROMPTS[0][:8] + tail)[8:]
    torch.testing.assert_close(logits, expected, **TOL)
