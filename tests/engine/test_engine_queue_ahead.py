"""Steps queued before the previous step's tokens are read (the GPU path) give exactly what the
synchronous path gives: the same tokens, texts, stops, logprobs and a clean cache afterwards.

The runner reads pending tokens on any device, so the CPU exercises the same engine logic as a
GPU; only the overlap in time is missing.
"""

from __future__ import annotations

import time

import pytest
from lmforge import GenerationConfig
from test_engine_e2e import GREEDY, NEW, assert_cache_empty, hf_greedy, make_pipe, random_prompts


def queue_ahead(pipe):
    pipe.engine.loop.engine.queue_ahead = True
    return pipe


@pytest.fixture(scope="module")
def prompts():
    return random_prompts(16, seed=5)


@pytest.fixture(scope="module")
def sync_pipe(tiny_llama_dir):
    with make_pipe(tiny_llama_dir) as p:
        yield p


@pytest.fixture(scope="module")
def ahead_pipe(tiny_llama_dir):
    with make_pipe(tiny_llama_dir) as p:
        yield queue_ahead(p)


def outputs(results):
    return [(r.token_ids, r.text, r.finish_reason, r.generate_token_len) for r in results]


def test_batch_equals_transformers(ahead_pipe, tiny_llama_dir, prompts, monkeypatch):
    engine = ahead_pipe.engine.loop.engine
    queued_ahead = []
    forward = engine._forward
    monkeypatch.setattr(engine, "_forward", lambda output, prev: (
        queued_ahead.append(prev is not None), forward(output, prev))[1])
    got = ahead_pipe(prompts, gen_config=GREEDY)
    assert [r.token_ids for r in got] == [hf_greedy(str(tiny_llama_dir), p, NEW) for p in prompts]
    # Every decode step went out before the previous step's tokens were read.
    assert sum(queued_ahead) >= NEW - 1
    assert_cache_empty(ahead_pipe)


def test_preemption_and_prefix_cache(tiny_llama_dir, prompts, sync_pipe):
    want = outputs(sync_pipe(prompts, gen_config=GREEDY))
    with make_pipe(tiny_llama_dir, cache_max_entry_count=12, max_prefill_token_num=32,
                   enable_prefix_caching=True) as small:
        queue_ahead(small)
        assert outputs(small(prompts, gen_config=GREEDY)) == want
        assert small.engine.loop.engine.scheduler.num_preemptions > 0
        # The blocks registered while steps were queued ahead hold the right tokens.
        assert outputs(small(prompts[:2], gen_config=GREEDY)) == want[:2]
        assert small.engine.stats()["prefix_cache_hit_tokens"] > 0
        assert_cache_empty(small)


def test_stops_on_tokens_and_words(sync_pipe, ahead_pipe, prompts):
    full = sync_pipe(prompts[:4], gen_config=GREEDY)
    # Each prompt stops at a different output position: on a stop token id, then a stop word.
    by_token = [GenerationConfig(max_new_tokens=NEW, top_k=1, ignore_eos=True,
                                 stop_token_ids=[r.token_ids[2 + i]]) for i, r in enumerate(full)]
    word = sync_pipe.tokenizer.decode(full[0].token_ids[4:6])
    by_word = GenerationConfig(max_new_tokens=NEW, top_k=1, ignore_eos=True, stop_words=[word])
    for cfg in (by_token, by_word):
        want = outputs(sync_pipe(prompts[:4], gen_config=cfg))
        assert outputs(ahead_pipe(prompts[:4], gen_config=cfg)) == want
        assert any(w[2] == "stop" for w in want)
    assert_cache_empty(ahead_pipe)


def test_sampling_logprobs_and_penalties(sync_pipe, ahead_pipe, prompts):
    cfgs = [
        GenerationConfig(max_new_tokens=NEW, top_k=0, temperature=0.9, random_seed=11,
                         ignore_eos=True, logprobs=3),
        GenerationConfig(max_new_tokens=NEW, top_k=1, ignore_eos=True, repetition_penalty=1.3),
        GenerationConfig(max_new_tokens=NEW - 3, n=2, top_k=0, random_seed=4, ignore_eos=True,
                         min_new_tokens=5),
    ]
    for cfg in cfgs:
        want = sync_pipe(prompts[:3], gen_config=cfg)
        got = ahead_pipe(prompts[:3], gen_config=cfg)
        flat = lambda rs: [r for x in rs for r in (x if isinstance(x, list) else [x])]  # noqa: E731
        assert outputs(flat(got)) == outputs(flat(want))
        assert [r.logprobs for r in flat(got)] == [r.logprobs for r in flat(want)]
    assert_cache_empty(ahead_pipe)


def test_session_length_and_pool_limits(tiny_llama_dir):
    with make_pipe(tiny_llama_dir, session_len=64) as short:
        queue_ahead(short)
        out = short(list(range(3, 60)), gen_config=GenerationConfig(max_new_tokens=50,
                                                                      ignore_eos=True))
        assert out.finish_reason == "length" and 60 - 3 + out.generate_token_len <= 64
        assert_cache_empty(short)
    with make_pipe(tiny_llama_dir, cache_max_entry_count=4) as tiny_pool:
        queue_ahead(tiny_pool)
        out = tiny_pool(list(range(3, 53)), gen_config=GenerationConfig(max_new_tokens=100,
                                                                          ignore_eos=True))
        assert (out.finish_reason, out.generate_token_len) == ("length", 15)
        assert_cache_empty(tiny_pool)


def test_abort_mid_stream_frees_cache(ahead_pipe):
    stream = ahead_pipe.stream_infer(random_prompts(4, seed=3), gen_config=GenerationConfig(
        max_new_tokens=200, ignore_eos=True))
    next(stream)
    stream.close()
    deadline = time.time() + 10
    while ahead_pipe.engine.stats()["kv_blocks_used"] and time.time() < deadline:
        time.sleep(0.05)
    assert_cache_empty(ahead_pipe)


def test_a_failed_step_is_contained(ahead_pipe, prompts, monkeypatch):
    """With steps queued ahead, a failure loses the tokens of the step before it too: both
    steps' sequences are recomputed alone and give the tokens they give without the failure."""
    want = [r.token_ids for r in ahead_pipe(prompts[:4], gen_config=GREEDY)]
    runner = ahead_pipe.engine.loop.engine.runner
    real, calls = runner.execute, []

    def flaky(batch):
        calls.append(1)
        if len(calls) == 3:  # a decode step, with the previous one still in flight
            raise RuntimeError("simulated device fault")
        return real(batch)

    monkeypatch.setattr(runner, "execute", flaky)
    got = [r.token_ids for r in ahead_pipe(prompts[:4], gen_config=GREEDY)]
    assert got == want
    assert_cache_empty(ahead_pipe)


def test_synchronous_runner_hands_out_tokens_in_their_own_step(tiny_llama_dir):
    """Without queueing ahead (a CPU), a step's token reaches its request before the step
    returns, not after the next step's forward."""
    from lmforge import PytorchEngineConfig
    from lmforge.engine.builder import build_llm_engine
    from lmforge.engine.request import Request

    engine = build_llm_engine(str(tiny_llama_dir), backend="pytorch", backend_config=(
        PytorchEngineConfig(dtype="float32", block_size=16, cache_max_entry_count=64)))
    assert not engine.queue_ahead
    got = []
    engine.add_request(Request([5, 6, 7], GenerationConfig(max_new_tokens=3, ignore_eos=True),
                               got.append))
    for step in range(1, 4):
        engine.step()
        assert [out.generate_token_len for out in got] == list(range(1, step + 1))
    assert got[-1].finish_reason == "length" and not engine.has_work
    engine.runner.close()
