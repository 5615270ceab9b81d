"""Constrained requests in the engine: every choice follows its grammar and ends when the grammar
does, unconstrained requests in the same batch are unaffected, and the queued-ahead path reads a
constrained sequence's tokens before it masks its next step."""

from __future__ import annotations

import json

import pytest
from lmforge import GenerationConfig
from lmforge.engine.sampling_batch import reads_output_tokens
from lmforge.engine.sequence import Sequence
from lmforge.errors import ConfigError
from lmforge.structured import Grammar
from test_engine_e2e import GREEDY, NEW, assert_cache_empty, hf_greedy, make_pipe, random_prompts
from test_engine_process import _pipe as process_or_thread_pipe

jsonschema = pytest.importorskip("jsonschema")  # a dev tool, absent where only the GPU tests run

SCHEMA = {
    "type": "object",
    "properties": {
        "kind": {"enum": ["cat", "dog", "owl"]},
        "legs": {"type": "integer", "minimum": 0, "maximum": 8},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
        "owner": {"type": "object", "properties": {"ok": {"type": "boolean"}},
                  "required": ["ok"], "additionalProperties": False},
    },
    "required": ["kind", "legs", "tags", "owner"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "animal", "schema": SCHEMA}}


def constrained(**kw) -> GenerationConfig:
    cfg = dict(max_new_tokens=96, top_k=0, temperature=1.0, response_format=FORMAT)
    return GenerationConfig(**{**cfg, **kw})


@pytest.fixture(scope="module")
def pipe(tiny_llama_dir):
    with make_pipe(tiny_llama_dir) as p:
        yield p


@pytest.fixture(scope="module")
def prompts():
    return random_prompts(8, seed=11)


def assert_valid(response) -> None:
    assert response.finish_reason == "stop", response
    jsonschema.validate(json.loads(response.text), SCHEMA)


def test_constrained_and_free_requests_share_batches(pipe, tiny_llama_dir, prompts):
    configs = [constrained(random_seed=i, n=2) if i % 2 else GREEDY for i in range(len(prompts))]
    got = pipe(prompts, gen_config=configs)
    for i, result in enumerate(got):
        if i % 2:
            assert len(result) == 2 and all(r.text for r in result)
            for choice in result:
                assert_valid(choice)
        else:
            assert result.token_ids == hf_greedy(str(tiny_llama_dir), prompts[i], NEW)
    assert_cache_empty(pipe)


def test_greedy_and_logprobs_within_the_grammar(pipe, prompts):
    got = pipe(prompts[:3], gen_config=constrained(top_k=1, logprobs=2))
    for r in got:
        assert_valid(r)
        # Masked tokens have no probability: the sampled one is the most likely allowed one.
        assert all(max(lp.values()) == next(iter(lp.values())) for lp in r.logprobs)
        assert len(r.logprobs) == r.generate_token_len


def test_other_formats(pipe, prompts):
    digits = pipe(prompts[0], gen_config=constrained(
        response_format={"type": "regex_schema", "regex_schema": r"\d{3}-\d{2}"}))
    assert digits.finish_reason == "stop" and len(digits.text) == 6 and digits.text[3] == "-"
    anything = pipe(prompts[1], gen_config=constrained(
        response_format={"type": "json_object"}, max_new_tokens=256, temperature=0.7))
    if anything.finish_reason == "stop":
        assert isinstance(json.loads(anything.text), dict)
    choice = pipe(prompts[2], gen_config=constrained(
        response_format={"type": "grammar", "grammar": 'root ::= "yes" | "no"'}))
    assert choice.text in ("yes", "no") and choice.finish_reason == "stop"


def test_constrained_steps_queue_their_forward_ahead_and_sample_after(tiny_llama_dir, prompts,
                                                                      monkeypatch):
    """A constrained step's forward is queued before the running step's tokens are read (it
    takes them on the device), and its sampling waits for them: the masks need every token."""
    with make_pipe(tiny_llama_dir) as sync:
        want = sync(prompts, gen_config=constrained(top_k=1))
    with make_pipe(tiny_llama_dir) as ahead:
        engine = ahead.engine.loop.engine
        engine.queue_ahead = True
        forward, sample = engine._forward, engine._sample
        at_forward, at_sample = [], []
        monkeypatch.setattr(engine, "_forward", lambda output, prev: (at_forward.extend(
            s.num_pending_tokens for s in output.seqs if s.grammar is not None),
            forward(output, prev))[1])
        monkeypatch.setattr(engine, "_sample", lambda queued: (at_sample.extend(
            s.num_pending_tokens for s in queued.seqs
            if s.grammar is not None and not s.is_finished), sample(queued))[1])
        got = ahead(prompts, gen_config=constrained(top_k=1))
        mixed = ahead(prompts[:4], gen_config=[constrained(top_k=1), GREEDY] * 2)
        free = ahead(prompts[:2], gen_config=GREEDY)
        assert [r.text for r in got] == [r.text for r in want]
        assert [r.text for r in mixed[::2]] == [r.text for r in want[:4:2]]
        assert any(at_forward), "no constrained forward was queued ahead"
        assert at_sample and not any(at_sample)
        assert all(r.generate_token_len == NEW for r in free + mixed[1::2])
        assert_cache_empty(ahead)


def test_grammars_cross_to_an_engine_process(tiny_llama_dir, prompts):
    choice = Grammar("grammar", 'start: "yes" | "no" | "maybe"', "guided_choice")
    configs = [constrained(top_k=1), constrained(top_k=1, response_format=choice)]
    results = {}
    for own_process in (False, True):
        with process_or_thread_pipe(tiny_llama_dir, engine_process=own_process) as pipe:
            results[own_process] = [r.text for r in pipe(prompts[:2], gen_config=configs)]
    assert results[True] == results[False]
    assert results[True][1] in ("yes", "no", "maybe")
    jsonschema.validate(json.loads(results[True][0]), SCHEMA)


def test_the_grammar_ends_the_reply_whatever_ignore_eos_and_min_tokens_say(pipe, prompts):
    for pattern, text in (("()", ""), ("ab", "ab")):
        got = pipe(prompts[0], gen_config=constrained(
            response_format={"type": "regex_schema", "regex_schema": pattern}, n=2,
            ignore_eos=True, min_new_tokens=5))
        assert [(r.text, r.finish_reason) for r in got] == [(text, "stop")] * 2
    assert_cache_empty(pipe)


def test_rejected_schema_fails_before_running(pipe, prompts):
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "foo"}}}
    with pytest.raises(ConfigError, match=r"response_format\.json_schema\.schema: Invalid type"):
        pipe(prompts[0], gen_config=constrained(response_format=bad))
    assert_cache_empty(pipe)


def test_only_penalties_make_a_step_wait_before_its_forward():
    # a grammar's mask is filled on the host at sampling time, after the forward is queued
    seq = Sequence([1, 2], GenerationConfig())
    seq.grammar = object()
    assert not reads_output_tokens(seq)
    assert reads_output_tokens(Sequence([1, 2], GenerationConfig(repetition_penalty=1.1)))
