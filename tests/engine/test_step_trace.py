"""The engine's step trace (LMFORGE_STEP_TRACE) on the CPU, and its summary
(scripts/summarize_step_trace.py): every request's arrival and every step's plan are recorded,
and a queue behind a full batch shows as steps with waiting requests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from lmforge import GenerationConfig
from test_engine_e2e import make_pipe, random_prompts

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "summarize_step_trace.py"
NEW = 5


@pytest.fixture(scope="module")
def summary():
    spec = importlib.util.spec_from_file_location("summarize_step_trace", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_trace_of_a_queued_batch(tiny_llama_dir, tmp_path, monkeypatch, summary):
    path = tmp_path / "trace.jsonl"
    monkeypatch.setenv("LMFORGE_STEP_TRACE", str(path))
    prompts = random_prompts(6, seed=3)
    config = GenerationConfig(max_new_tokens=NEW, ignore_eos=True, top_k=1)
    with make_pipe(tiny_llama_dir, max_batch_size=2, prefill_interval=1) as pipe:
        pipe(prompts, gen_config=config, do_preprocess=False)
        steps_total = pipe.engine.stats()["steps_total"]
    events = summary.read_trace(path)
    adds = [e for e in events if e[0] == "add"]
    steps = [e for e in events if e[0] == "step"]
    assert [e[2] for e in adds] == [len(p) for p in prompts]
    assert len(steps) == steps_total
    assert all(1 <= s[3] <= 2 and s[2] >= 0 for s in steps)
    # No preemption, no prefix cache: each prompt token is computed once.
    assert sum(s[4] for s in steps) == sum(len(p) for p in prompts)
    # Each request decodes NEW - 1 tokens after its prompt step (its last token is not fed back).
    assert sum(s[3] for s in steps if s[4] == 0) == len(prompts) * (NEW - 1)
    assert steps[0][6] == 4 and steps[-1][5:] == [0, 0]

    (run,) = summary.split_runs(events, gap=5.0)
    r = summary.summarize_run(run)
    assert r["requests"] == 6 and r["prompt_tokens"] == sum(len(p) for p in prompts)
    assert r["queued"]["steps"] + r["drained"]["steps"] == steps_total
    assert r["queued"]["rows"] == 2.0  # the batch stays full while requests wait


def test_runs_split_at_idle_gaps(summary):
    events = [["add", 0.0, 4], ["step", 0.5, 0.4, 1, 4, 1, 0], ["step", 0.6, 0.1, 1, 0, 0, 0],
              ["add", 3.0, 7], ["step", 3.2, 0.2, 1, 7, 1, 0]]
    first, second = summary.split_runs(events, gap=1.0)
    assert len(first) == 3 and len(second) == 2
    r = summary.summarize_run(first)
    assert r["requests"] == 1 and r["prompt_tokens"] == 4
    assert r["elapsed_s"] == pytest.approx(0.6)
    assert r["between_ms"] == pytest.approx(0.0)
    assert r["drained"]["steps"] == 2 and r["queued"]["steps"] == 0
