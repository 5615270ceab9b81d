"""The engine in its own process: the same tokens as in-process, errors in one sentence, a crash
reported to every waiting request, and no process left behind."""

from __future__ import annotations

import os
import signal
import time

import pytest
from lmforge import GenerationConfig, PytorchEngineConfig
from lmforge.engine.builder import build_async_engine
from lmforge.errors import EngineError, ModelLoadError
from lmforge.pipeline import Pipeline
from test_engine_e2e import GREEDY, random_prompts

CONFIG = dict(dtype="float32", block_size=16, max_prefill_token_num=256, cache_max_entry_count=512)


def _pipe(model_dir, engine_process: bool, **config) -> Pipeline:
    engine = build_async_engine(str(model_dir),
                                backend_config=PytorchEngineConfig(**CONFIG | config),
                                engine_process=engine_process)
    return Pipeline(engine)


@pytest.fixture(scope="module")
def process_pipe(tiny_llama_dir):
    with _pipe(tiny_llama_dir, engine_process=True) as pipe:
        yield pipe


def test_same_tokens_and_texts_as_in_process(process_pipe, tiny_llama_dir):
    prompts = random_prompts(6, seed=11)
    cfg = GenerationConfig(max_new_tokens=10, ignore_eos=True, logprobs=2)
    got = process_pipe(prompts, gen_config=cfg)
    with _pipe(tiny_llama_dir, engine_process=False) as local:
        want = local(prompts, gen_config=cfg)
    assert [(r.token_ids, r.text, r.finish_reason) for r in got] == [
        (r.token_ids, r.text, r.finish_reason) for r in want]
    assert got[0].logprobs == want[0].logprobs
    assert process_pipe.get_ppl(prompts[0]) == pytest.approx(local_ppl(tiny_llama_dir, prompts[0]))


def test_tensor_parallel_ranks_start_from_the_engine_process(tiny_llama_dir):
    """The engine process is tensor parallelism's driver: its rank 0 starts the other ranks."""
    prompts = random_prompts(3, seed=5)
    cfg = GenerationConfig(max_new_tokens=8, ignore_eos=True, top_k=1)
    with _pipe(tiny_llama_dir, engine_process=True, device="cpu", tp=2) as pipe:
        got = pipe(prompts, gen_config=cfg)
    with _pipe(tiny_llama_dir, engine_process=False, device="cpu") as local:
        want = local(prompts, gen_config=cfg)
    assert [r.token_ids for r in got] == [r.token_ids for r in want]


def local_ppl(model_dir, ids):
    with _pipe(model_dir, engine_process=False) as local:
        return local.get_ppl(ids)


def test_n_choices_stop_words_and_abort(process_pipe):
    both = process_pipe(random_prompts(1, seed=2)[0], gen_config=GenerationConfig(
        n=2, max_new_tokens=6, ignore_eos=True, top_k=0, random_seed=3))
    assert len(both) == 2 and all(r.generate_token_len == 6 for r in both)
    stream = process_pipe.stream_infer(random_prompts(3, seed=4), gen_config=GenerationConfig(
        max_new_tokens=400, ignore_eos=True))
    next(stream)
    stream.close()  # aborts the three requests
    deadline = time.monotonic() + 10
    while process_pipe.engine.stats().get("kv_blocks_used") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_pipe.engine.stats()["kv_blocks_used"] == 0


def test_refusals_cross_the_process_as_one_sentence(process_pipe):
    from lmforge.errors import ConfigError

    with pytest.raises(ConfigError, match="not in this model's vocabulary"):
        process_pipe([10**9], gen_config=GREEDY)


def test_a_load_failure_in_the_engine_process_is_one_sentence(tiny_llama_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="Cannot read the weight file"):
        _pipe(broken, engine_process=True)


def test_a_crash_reaches_every_waiting_request_and_nothing_is_left(tiny_llama_dir):
    pipe = _pipe(tiny_llama_dir, engine_process=True)
    process = pipe.engine.loop.process
    stream = pipe.stream_infer(random_prompts(2, seed=9), gen_config=GenerationConfig(
        max_new_tokens=2000, ignore_eos=True))
    next(stream)
    os.kill(process.pid, signal.SIGKILL)
    with pytest.raises(EngineError, match=r"exited unexpectedly \(exit code -9\)"):
        for _ in stream:
            pass
    assert "restart the server" in pipe.engine.loop.error
    with pytest.raises(EngineError):
        pipe(random_prompts(1)[0], gen_config=GREEDY)
    pipe.close()
    assert not process.is_alive()


def test_close_leaves_no_process(tiny_llama_dir):
    pipe = _pipe(tiny_llama_dir, engine_process=True)
    process = pipe.engine.loop.process
    assert process.is_alive()
    pipe.close()
    assert not process.is_alive() and process.exitcode == 0


def test_engine_process_logs_at_the_front_ends_level(tiny_llama_dir):
    """--log-level INFO reaches the engine process: its load (and, on a GPU, warm-up and
    late-compile) records are printed like the front end's."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        from lmforge import PytorchEngineConfig
        from lmforge.cli.console import configure_logging
        from lmforge.engine.builder import build_async_engine
        configure_logging("INFO")
        engine = build_async_engine({str(tiny_llama_dir)!r}, engine_process=True,
                                    backend_config=PytorchEngineConfig(**{CONFIG!r}))
        engine.close()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "INFO lmforge.engine.builder: loaded" in done.stderr
