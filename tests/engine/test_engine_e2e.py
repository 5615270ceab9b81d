"""The whole engine against transformers: greedy tokens equal alone, batched, preempted, cached."""

from __future__ import annotations

import random

import pytest
import torch
from lmforge import GenerationConfig, PytorchEngineConfig, pipeline
from lmforge.errors import ConfigError, ModelLoadError, PluginError, PromptTooLongError

NEW = 12


def hf_greedy(model_dir, prompt_ids: list[int], new_tokens: int) -> list[int]:

    model = _hf_model(model_dir)
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False)
    return out[0, len(prompt_ids):].tolist()


_models: dict = {}


def _hf_model(model_dir):
    from transformers import AutoModelForCausalLM

    if model_dir not in _models:
        _models[model_dir] = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return _models[model_dir]


def random_prompts(count: int, seed: int = 0, low: int = 3, high: int = 90) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 49152) for _ in range(rng.randint(low, high))] for _ in range(count)]


GREEDY = GenerationConfig(max_new_tokens=NEW, ignore_eos=True, top_k=1)


def make_pipe(model_dir, **overrides):
    cfg = dict(dtype="float32", block_size=16, max_prefill_token_num=256, cache_max_entry_count=512)
    cfg.update(overrides)
    return pipeline(str(model_dir), backend_config=PytorchEngineConfig(**cfg))


def assert_cache_empty(pipe):
    stats = pipe.engine.stats()
    assert stats["kv_blocks_used"] == 0, stats
    assert stats["num_running"] == 0 and stats["num_waiting"] == 0, stats


@pytest.fixture(scope="module")
def pipe(tiny_llama_dir):
    with make_pipe(tiny_llama_dir) as p:
        yield p


@pytest.fixture(scope="module")
def prompts():
    return random_prompts(16)


@pytest.fixture(scope="module")
def expected(tiny_llama_dir, prompts):
    return [hf_greedy(str(tiny_llama_dir), p, NEW) for p in prompts]


def test_alone_equals_transformers(pipe, prompts, expected):
    for p, want in zip(prompts[:4], expected[:4], strict=True):
        assert pipe(p, gen_config=GREEDY).token_ids == want
    assert_cache_empty(pipe)


def test_batched_with_fifteen_others(pipe, prompts, expected):
    got = pipe(prompts, gen_config=GREEDY)
    assert [r.token_ids for r in got] == expected
    assert all(r.finish_reason == "length" and r.generate_token_len == NEW for r in got)
    assert_cache_empty(pipe)


def test_chunked_prefill_and_preemption(tiny_llama_dir, prompts, expected):
    # 12 blocks of 16 tokens cannot hold 16 sequences at once: the scheduler must preempt and
    # resume; a 32-token budget splits every longer prompt into chunks.
    with make_pipe(tiny_llama_dir, cache_max_entry_count=12, max_prefill_token_num=32) as small:
        got = small(prompts, gen_config=GREEDY)
        assert [r.token_ids for r in got] == expected
        assert small.engine.loop.engine.scheduler.num_preemptions > 0
        assert_cache_empty(small)


def test_prefix_cache_hit(tiny_llama_dir, prompts, expected):
    with make_pipe(tiny_llama_dir, enable_prefix_caching=True) as cached:
        first = cached(prompts[0], gen_config=GREEDY)
        again = cached(prompts[0], gen_config=GREEDY)
        assert first.token_ids == again.token_ids == expected[0]
        assert cached.engine.stats()["prefix_cache_hit_tokens"] > 0
        assert_cache_empty(cached)


def test_stream_infer_concatenates_to_batch_result(pipe):
    text = "".join(r.text for r in pipe.stream_infer("Hello there", gen_config=GREEDY))
    assert text == pipe("Hello there", gen_config=GREEDY).text


def test_multi_turn_chat_keeps_history(pipe):
    session = pipe.chat("Hi, my name is Ada.", gen_config=GREEDY)
    first = session.response
    session = pipe.chat("What is my name?", session=session, gen_config=GREEDY)
    assert len(session.history) == 2
    # The second turn's prompt includes the first turn, so it is longer than the question alone.
    assert session.response.input_token_len > first.input_token_len + first.generate_token_len
    pipe.end_session(session)


def test_get_ppl_matches_transformers(pipe, tiny_llama_dir, prompts):
    ids = prompts[1]
    model = _hf_model(str(tiny_llama_dir))
    with torch.inference_mode():
        loss = model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    assert pipe.get_ppl(ids) == pytest.approx(loss, rel=1e-4)
    assert_cache_empty(pipe)


def test_sampling_seed_reproduces(pipe):
    cfg = GenerationConfig(max_new_tokens=8, top_k=0, temperature=1.0, random_seed=7, ignore_eos=True)
    assert pipe("Tell me a joke", gen_config=cfg).token_ids == pipe("Tell me a joke", gen_config=cfg).token_ids


def test_n_choices(pipe):
    cfg = GenerationConfig(n=3, max_new_tokens=4, top_k=0, temperature=1.0, ignore_eos=True)
    out = pipe("Hello", gen_config=cfg)
    assert len(out) == 3 and all(r.generate_token_len == 4 for r in out)
    seeded = GenerationConfig(n=3, max_new_tokens=8, top_k=0, temperature=1.0, random_seed=3,
                              ignore_eos=True)
    first, again = pipe("Hello", gen_config=seeded), pipe("Hello", gen_config=seeded)
    assert sorted(r.token_ids for r in first) == sorted(r.token_ids for r in again)
    assert len({tuple(r.token_ids) for r in first}) > 1  # choices differ from each other
    assert_cache_empty(pipe)


# ---------------------------------------------------------------------------------- bad input


def test_prompt_longer_than_session_len(tiny_llama_dir):
    with make_pipe(tiny_llama_dir, session_len=64) as short:
        with pytest.raises(PromptTooLongError, match="session length"):
            short(list(range(3, 200)), gen_config=GREEDY)
        # A prompt that fits but whose generation would not: stops with "length".
        out = short(list(range(3, 60)), gen_config=GenerationConfig(max_new_tokens=50, ignore_eos=True))
        assert out.finish_reason == "length" and 60 - 3 + out.generate_token_len <= 64
        assert_cache_empty(short)


@pytest.mark.parametrize("field,value", [("temperature", -1.0), ("top_p", 0.0), ("top_k", -2),
                                         ("n", 0), ("min_p", 2.0)])
def test_invalid_sampling_names_field(field, value):
    with pytest.raises(ConfigError, match=field):
        GenerationConfig(**{field: value})


def test_missing_model_path():
    with pytest.raises(ModelLoadError):
        pipeline("/nonexistent/model", backend_config=PytorchEngineConfig(dtype="float32"))


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["FancyNetForCausalLM"], "model_type": "fancy"}')
    with pytest.raises((ModelLoadError, PluginError), match="LlamaForCausalLM"):
        pipeline(str(tmp_path), backend_config=PytorchEngineConfig(dtype="float32"))


def test_setting_the_engine_lacks_is_refused_by_its_declaration(tiny_llama_dir):
    with pytest.raises(ConfigError, match="The pytorch engine does not support tp=5"):
        pipeline(str(tiny_llama_dir), backend_config=PytorchEngineConfig(tp=5))


def test_abort_mid_stream_frees_cache(pipe):
    stream = pipe.stream_infer(random_prompts(4, seed=3), gen_config=GenerationConfig(
        max_new_tokens=200, ignore_eos=True))
    next(stream)
    stream.close()
    import time

    deadline = time.time() + 10
    while pipe.engine.stats()["kv_blocks_used"] and time.time() < deadline:
        time.sleep(0.05)
    assert_cache_empty(pipe)


def test_sequence_that_fills_the_pool_ends_with_length(tiny_llama_dir):
    # 4 blocks of 16 tokens hold 64 positions: 50 prompt tokens leave K/V room for 14 outputs,
    # and a 15th is sampled from the last one's logits.
    with make_pipe(tiny_llama_dir, cache_max_entry_count=4) as tiny_pool:
        out = tiny_pool(list(range(3, 53)), gen_config=GenerationConfig(max_new_tokens=100, ignore_eos=True))
        assert out.finish_reason == "length"
        assert out.generate_token_len == 15
        assert_cache_empty(tiny_pool)


def test_a_step_that_fails_once_is_retried_and_nobody_notices(pipe, prompts, expected,
                                                             monkeypatch):
    runner = pipe.engine.loop.engine.runner
    real = runner.execute

    def broken(batch):
        monkeypatch.setattr(runner, "execute", real)  # fail once
        raise RuntimeError("simulated device fault")

    monkeypatch.setattr(runner, "execute", broken)
    got = pipe(prompts[:3], gen_config=GREEDY)
    assert [r.token_ids for r in got] == expected[:3]
    assert pipe.engine.stats()["failed_steps_total"] >= 1
    assert_cache_empty(pipe)


def test_a_request_whose_steps_fail_ends_alone_with_an_error(pipe, prompts, expected,
                                                            monkeypatch):
    """A poisoned request (every step holding it raises) fails; the requests batched with it
    finish with the right tokens and the engine keeps serving."""
    runner = pipe.engine.loop.engine.runner
    real = runner.execute
    poison = prompts[1]

    def execute(batch):
        if any(batch.input_ids[i:i + len(poison)] == poison for i in range(len(batch.input_ids))):
            raise IndexError("index out of range in self")
        return real(batch)

    monkeypatch.setattr(runner, "execute", execute)
    import queue

    done: queue.SimpleQueue = queue.SimpleQueue()
    outputs: dict[int, list] = {0: [], 1: [], 2: []}
    for i in range(3):  # separate requests, as separate users send them
        pipe.engine.start(prompts[i], GREEDY, lambda out, i=i: done.put((i, out)))
    finished = 0
    while finished < 3:
        i, out = done.get(timeout=60)
        outputs[i].append(out)
        finished += out.finish_reason is not None
    monkeypatch.setattr(runner, "execute", real)
    assert outputs[1][-1].finish_reason == "error"
    assert "index out of range" in outputs[1][-1].error
    for i in (0, 2):
        assert sum((o.token_ids for o in outputs[i]), []) == expected[i]
        assert outputs[i][-1].finish_reason == "length"
    assert_cache_empty(pipe)
    assert pipe(prompts[0], gen_config=GREEDY).token_ids == expected[0]


def test_token_ids_outside_the_vocabulary_are_refused(pipe):
    from lmforge.errors import ConfigError

    for bad in ([49152], [1, -1, 2], [10**9]):
        with pytest.raises(ConfigError, match="not in this model.s vocabulary"):
            pipe(bad, gen_config=GREEDY)
    assert_cache_empty(pipe)


def test_stop_word_ends_text_before_it(pipe, prompts):
    # The stop word ends the text at the step its last token arrives; a token computed past
    # it (steps queued ahead) must not leak into the output.
    full = pipe(prompts[2], gen_config=GREEDY)
    word = pipe.tokenizer.decode(full.token_ids[4:6])
    assert word and word in full.text
    cut = full.text.index(word)
    cfg = GenerationConfig(max_new_tokens=NEW, ignore_eos=True, top_k=1, stop_words=[word])
    out = pipe(prompts[2], gen_config=cfg)
    assert out.finish_reason == "stop"
    assert out.text == full.text[:cut]
    assert out.token_ids == full.token_ids[: len(out.token_ids)]
    with_stop = pipe(prompts[2], gen_config=GenerationConfig(
        max_new_tokens=NEW, ignore_eos=True, top_k=1, stop_words=[word],
        include_stop_str_in_output=True))
    assert with_stop.text == full.text[: cut + len(word)]
    assert_cache_empty(pipe)


def test_unreadable_model_files(tiny_llama_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken_config"
    shutil.copytree(tiny_llama_dir, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config.json"):
        pipeline(str(broken), backend_config=PytorchEngineConfig(dtype="float32"))
    corrupt = tmp_path / "corrupt_weights"
    shutil.copytree(tiny_llama_dir, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        pipeline(str(corrupt), backend_config=PytorchEngineConfig(dtype="float32"))


def test_penalties_apply_to_every_seeded_choice(pipe):
    """With n > 1 and a seed, each choice runs on a copy of the request's config: the server's
    presence and frequency penalties must survive the copy (greedy, so both choices equal the
    penalized reply alone)."""
    from lmforge.serve.protocol import CompletionRequest
    from lmforge.serve.sampling import completion_generation_config

    prompt = random_prompts(1, seed=5)[0]

    def config(n):
        req = CompletionRequest(model="m", prompt=prompt, n=n, seed=11, top_k=1, max_tokens=NEW,
                                frequency_penalty=1.5, ignore_eos=True)
        return completion_generation_config(req, 2048)

    alone = pipe(prompt, gen_config=config(1))
    assert alone.token_ids != pipe(prompt, gen_config=GREEDY).token_ids  # the penalty bites
    both = pipe(prompt, gen_config=config(2))
    assert [r.token_ids for r in both] == [alone.token_ids, alone.token_ids]
