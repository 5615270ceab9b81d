"""The engine with an int8 / int4 K/V cache (quant_policy 8 / 4) on the CPU: prefix-cache hits,
chunked prefill, preemption under a tiny pool and interactive sessions give what a plain run
of the same policy gives, and int8 stays close to the unquantized cache."""

from __future__ import annotations

import pytest
from lmforge import GenerationConfig
from test_engine_e2e import GREEDY, NEW, assert_cache_empty, make_pipe, random_prompts

POLICIES = [8, 4]


@pytest.fixture(scope="module")
def prompts():
    return random_prompts(16, seed=11)


@pytest.fixture(scope="module")
def plain_runs(tiny_llama_dir, prompts):
    """Greedy outputs of every prompt, batched, for policies 0, 8 and 4."""
    runs = {}
    for policy in (0, *POLICIES):
        with make_pipe(tiny_llama_dir, quant_policy=policy) as pipe:
            runs[policy] = [r.token_ids for r in pipe(prompts, gen_config=GREEDY)]
            assert_cache_empty(pipe)
    return runs


def test_int8_answers_like_the_unquantized_cache(plain_runs):
    same = sum(a == b for a, b in zip(plain_runs[0], plain_runs[8], strict=True))
    assert same >= 14, f"int8 changed {16 - same} of 16 greedy answers"
    first = sum(a[:4] == b[:4] for a, b in zip(plain_runs[0], plain_runs[4], strict=True))
    assert first >= 12, f"int4 changed the first tokens of {16 - first} of 16 answers"


@pytest.mark.parametrize("policy", POLICIES)
def test_chunked_prefill_and_preemption(tiny_llama_dir, prompts, plain_runs, policy):
    # 12 blocks of 16 tokens cannot hold 16 sequences: the scheduler preempts and recomputes;
    # a 32-token budget chunks every longer prompt.
    with make_pipe(tiny_llama_dir, quant_policy=policy, cache_max_entry_count=12,
                   max_prefill_token_num=32) as small:
        got = small(prompts, gen_config=GREEDY)
        assert [r.token_ids for r in got] == plain_runs[policy]
        assert small.engine.loop.engine.scheduler.num_preemptions > 0
        assert_cache_empty(small)


@pytest.mark.parametrize("policy", POLICIES)
def test_prefix_cache_hits(tiny_llama_dir, prompts, plain_runs, policy):
    with make_pipe(tiny_llama_dir, quant_policy=policy, enable_prefix_caching=True) as cached:
        first = cached(prompts[0], gen_config=GREEDY).token_ids
        again = cached(prompts[0], gen_config=GREEDY).token_ids
        # A longer prompt that shares the first one's full blocks.
        longer = prompts[0] + prompts[1]
        extended = cached(longer, gen_config=GREEDY).token_ids
        assert cached.engine.stats()["prefix_cache_hit_tokens"] > len(prompts[0])
        assert first == again == plain_runs[policy][0]
        assert_cache_empty(cached)
    with make_pipe(tiny_llama_dir, quant_policy=policy) as fresh:
        assert fresh(longer, gen_config=GREEDY).token_ids == extended


@pytest.mark.parametrize("policy", POLICIES)
def test_interactive_session_reuses_its_quantized_cache(tiny_llama_dir, policy):
    with make_pipe(tiny_llama_dir, quant_policy=policy) as pipe:
        session = pipe.chat("Hi, my name is Ada.", gen_config=GREEDY)
        hits = pipe.engine.stats()["prefix_cache_hit_tokens"]
        session = pipe.chat("What is my name?", session=session, gen_config=GREEDY)
        assert pipe.engine.stats()["prefix_cache_hit_tokens"] > hits  # the first turn's K/V
        history = pipe.engine._sessions[session.session_id]
        second = session.response.token_ids
        prompt = history[: len(history) - len(second)]
        pipe.end_session(session)
        assert_cache_empty(pipe)
    with make_pipe(tiny_llama_dir, quant_policy=policy) as fresh:
        assert fresh(prompt, gen_config=GREEDY).token_ids == second


@pytest.mark.parametrize("policy", POLICIES)
def test_a_tiny_pool_ends_a_long_sequence_with_length(tiny_llama_dir, policy):
    with make_pipe(tiny_llama_dir, quant_policy=policy, cache_max_entry_count=4) as tiny_pool:
        out = tiny_pool(list(range(3, 53)), gen_config=GenerationConfig(
            max_new_tokens=100, ignore_eos=True))
        assert out.finish_reason == "length" and out.generate_token_len == 15
        assert_cache_empty(tiny_pool)


def test_pool_sized_in_tokens_and_memory(tiny_llama_dir):
    runner_bytes = None
    with make_pipe(tiny_llama_dir, quant_policy=8, max_kv_tokens=3000,
                   cache_max_entry_count=0.8) as by_tokens:
        stats = by_tokens.engine.stats()
        assert stats["kv_tokens_total"] == 3008  # whole blocks of 16
        runner_bytes = by_tokens.engine.loop.engine.runner.cache_block_bytes(16)
        assert by_tokens(random_prompts(1)[0], gen_config=GREEDY).generate_token_len == NEW
    memory = f"{runner_bytes * 200}B"
    with make_pipe(tiny_llama_dir, quant_policy=8, kv_cache_memory=memory,
                   cache_max_entry_count=0.8) as by_memory:
        assert by_memory.engine.stats()["kv_blocks_total"] == 200


@pytest.fixture(scope="module")
def wide_head_llama_dir(make_tiny_llama):
    """Head dim 32: int4 keys are stored in the Hadamard basis (kv_cache.rotates_keys)."""
    return make_tiny_llama("wide_head_llama", hidden_size=128)


def test_int4_keys_in_the_hadamard_basis(wide_head_llama_dir, prompts):
    prompts = prompts[:8]
    runs = {}
    for policy in (0, 4):
        with make_pipe(wide_head_llama_dir, quant_policy=policy) as pipe:
            runner = pipe.engine.loop.engine.runner
            assert runner.config.head_dim == 32
            runs[policy] = [r.token_ids for r in pipe(prompts, gen_config=GREEDY)]
    first = sum(a[:4] == b[:4] for a, b in zip(runs[0], runs[4], strict=True))
    assert first >= 6, f"int4 changed the first tokens of {8 - first} of 8 answers"
    with make_pipe(wide_head_llama_dir, quant_policy=4, cache_max_entry_count=12,
                   max_prefill_token_num=32, enable_prefix_caching=True) as small:
        assert [r.token_ids for r in small(prompts, gen_config=GREEDY)] == runs[4]
        assert small.engine.loop.engine.scheduler.num_preemptions > 0
        assert [r.token_ids for r in small(prompts[:2], gen_config=GREEDY)] == runs[4][:2]
        assert small.engine.stats()["prefix_cache_hit_tokens"] > 0
        assert_cache_empty(small)
