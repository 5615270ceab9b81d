"""The whole engine with tensor parallelism on the CPU: tp ranks (gloo) give tp=1's tokens."""

from __future__ import annotations

import random

from lmforge import GenerationConfig, PytorchEngineConfig, pipeline

GREEDY = GenerationConfig(max_new_tokens=12, ignore_eos=True, top_k=1)


def _run(model, tp: int, prompts, **config) -> tuple[list[list[int]], dict]:
    """Greedy tokens of ``prompts`` with ``tp`` ranks, and the engine's stats afterwards."""
    config = {"cache_max_entry_count": 128, **config}
    cfg = PytorchEngineConfig(device="cpu", dtype="float32", tp=tp, block_size=16, **config)
    with pipeline(model, backend_config=cfg) as pipe:
        tokens = [r.token_ids for r in pipe(prompts, gen_config=GREEDY)]
        return tokens, pipe.engine.stats()


def _tokens(model, tp: int, prompts, **config) -> list[list[int]]:
    return _run(model, tp, prompts, **config)[0]


def test_tp2_greedy_tokens_equal_tp1(tiny_llama_dir):
    rng = random.Random(3)
    prompts = [[rng.randrange(3, 49152) for _ in range(rng.randint(3, 40))] for _ in range(5)]
    # A step budget below the longest prompt: prompts prefill in chunks beside decodes.
    want = _tokens(str(tiny_llama_dir), 1, prompts, max_prefill_token_num=32)
    assert _tokens(str(tiny_llama_dir), 2, prompts, max_prefill_token_num=32) == want


def test_tp2_keeps_the_same_block_tables_through_preemption(tiny_llama_dir):
    # A pool of 12 blocks for prompts that need more: sequences are preempted and come back,
    # and every rank's device-resident tables must follow the same slot changes.
    rng = random.Random(4)
    prompts = [[rng.randrange(3, 49152) for _ in range(rng.randint(20, 60))] for _ in range(6)]
    small = dict(max_prefill_token_num=32, cache_max_entry_count=12)
    want = _tokens(str(tiny_llama_dir), 1, prompts, **small)
    got, stats = _run(str(tiny_llama_dir), 2, prompts, **small)
    assert got == want and stats["preemptions_total"] > 0
