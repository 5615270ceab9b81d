"""The whole engine with tensor parallelism on the CPU: tp ranks (gloo) give tp=1's tokens."""

from __future__ import annotations

import random

from lmforge import GenerationConfig, PytorchEngineConfig, pipeline

GREEDY = GenerationConfig(max_new_tokens=12, ignore_eos=True, top_k=1)


def _tokens(model, tp: int, prompts, **config) -> list[list[int]]:
    cfg = PytorchEngineConfig(device="cpu", dtype="float32", tp=tp, block_size=16,
                              cache_max_entry_count=128, **config)
    with pipeline(model, backend_config=cfg) as pipe:
        return [r.token_ids for r in pipe(prompts, gen_config=GREEDY)]


def test_tp2_greedy_tokens_equal_tp1(tiny_llama_dir):
    rng = random.Random(3)
    prompts = [[rng.randrange(3, 49152) for _ in range(rng.randint(3, 40))] for _ in range(5)]
    # A step budget below the longest prompt: prompts prefill in chunks beside decodes.
    want = _tokens(str(tiny_llama_dir), 1, prompts, max_prefill_token_num=32)
    assert _tokens(str(tiny_llama_dir), 2, prompts, max_prefill_token_num=32) == want
