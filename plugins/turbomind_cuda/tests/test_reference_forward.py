"""The PyTorch twin of the library's step, over the converted layout and the host-side step
plan, against transformers (float32, CPU): this pins the layout, the tiles, the decode/prefill
split and every kernel's semantics that the GPU tests then hold the CUDA kernels to."""

from __future__ import annotations

import pytest
import torch
from torch_runner_helpers import (
    PagedDriver,
    PagedSeq,
    greedy,
    hf_greedy,
    hf_logits,
    save_hf_model,
    save_internlm2,
)
from turbomind_helpers import ReferenceRunner

TOL = dict(rtol=1e-4, atol=1e-4)
PROMPTS = [[1, 17, 42, 99, 5, 64, 23, 88, 11, 7, 120], [1, 9, 77, 31, 56, 2, 100]]

CASES = {
    "llama": lambda d: save_hf_model("llama", d),
    "llama-tied": lambda d: save_hf_model("llama", d, tie_word_embeddings=True),
    "mistral-window": lambda d: save_hf_model("mistral", d, sliding_window=6),
    "qwen2-bias": lambda d: save_hf_model("qwen2", d),
    "internlm2": save_internlm2,
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    reference = CASES[request.param](path)
    return ReferenceRunner(path), reference


def test_prefill_logits_match_transformers(case):
    runner, reference = case
    driver = PagedDriver(runner)
    logits = driver.step([(PagedSeq(), p) for p in PROMPTS], return_all_logits=True)
    expected = torch.cat([hf_logits(reference, p) for p in PROMPTS])
    torch.testing.assert_close(logits, expected, **TOL)


def test_greedy_decode_matches_generate(case):
    runner, reference = case
    outputs = greedy(PagedDriver(runner), PROMPTS, steps=8)
    assert outputs == [hf_greedy(reference, p, 8) for p in PROMPTS]


def test_decode_beside_a_chunked_prefill(case):
    runner, reference = case
    driver = PagedDriver(runner)
    prompt, other = PROMPTS
    seq, decoding = PagedSeq(), PagedSeq()
    driver.step([(decoding, other)])
    assert driver.step([(seq, prompt[:6])], need_logits=[False]).shape[0] == 0
    # The decode leads the batch, so it takes the decode kernel's path.
    logits = driver.step([(decoding, [3]), (seq, prompt[6:])])
    torch.testing.assert_close(logits[0], hf_logits(reference, other + [3])[-1], **TOL)
    torch.testing.assert_close(logits[1], hf_logits(reference, prompt)[-1], **TOL)


def test_long_prompt_spans_several_tiles(tmp_path):
    reference = save_hf_model("llama", tmp_path)
    runner = ReferenceRunner(tmp_path)
    prompt = [(7 * i + 3) % 128 for i in range(150)]  # three 64-row prefill tiles
    logits = PagedDriver(runner, num_blocks=64).step([(PagedSeq(), prompt)],
                                                       return_all_logits=True)
    torch.testing.assert_close(logits, hf_logits(reference, prompt), **TOL)
