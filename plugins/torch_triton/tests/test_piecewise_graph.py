"""Prompt and mixed steps run as stretches between the layers' attention (replayed as CUDA
graphs on a GPU) give the logits and the cache of the whole-step forward; on the CPU the same
stretches run eagerly, which checks the decomposition: padding rows, static buffers, attention
at the step's own sizes between them."""

from __future__ import annotations

import random

import pytest
import torch
from lmforge.engine.batch import ForwardBatch
from lmforge_torch_triton.inputs import build_step_inputs
from lmforge_torch_triton.piecewise_graph import PromptGraphs, supports_pieces
from test_runner_families import CASES
from torch_runner_helpers import make_runner, ring_batch, save_hf_model

BLOCK, BLOCKS = 16, 256


def random_step(rng: random.Random, vocab: int, first_block: int) -> ForwardBatch:
    """Decodes first, then one to three prompt chunks (some after a cached prefix)."""
    q_lens, kv_lens = [], []
    for _ in range(rng.choice([0, 1, 3, 8])):
        q_lens.append(1)
        kv_lens.append(rng.randint(1, 60))
    for _ in range(rng.randint(1, 3)):
        chunk = rng.choice([2, 5, 16, 17, rng.randint(2, 40)])
        q_lens.append(chunk)
        kv_lens.append(rng.choice([0, rng.randint(1, 30)]) + chunk)
    return ring_batch(rng, vocab, q_lens, kv_lens, first_block, BLOCK, BLOCKS)


def compare(runner, pieces: PromptGraphs, steps: int, seed: int, **tolerance) -> None:
    rng, vocab = random.Random(seed), runner.config.vocab_size
    for i in range(steps):
        batch = random_step(rng, vocab, first_block=i * 37)
        inputs = build_step_inputs(batch, runner.device)
        assert pieces.can_run(inputs)
        whole = runner.model.forward(inputs, runner.kv_caches)
        cache = [c.k.clone() for c in runner.kv_caches]
        torch.testing.assert_close(pieces.run(inputs), whole, **tolerance)
        for before, c in zip(cache, runner.kv_caches, strict=True):
            torch.testing.assert_close(c.k, before, **tolerance)  # the same K/V written


@pytest.mark.parametrize("case", ["llama", *CASES])
def test_stretches_between_attention_give_the_whole_forward(case, tmp_path):
    kind = dict(CASES[case]) if case in CASES else {"kind": "llama"}
    save_hf_model(**kind, out=tmp_path)
    runner = make_runner(tmp_path)
    runner.allocate_cache(BLOCKS, BLOCK)
    if not supports_pieces(runner.model):
        assert "longrope" in case  # rotary tables that need each sequence's length
        return
    pieces = PromptGraphs(runner.model, runner.kv_caches, max_tokens=128,
                          device=runner.device, capture=False)
    pieces.capture_all()
    assert pieces.buckets == [16, 32, 64, 128]
    compare(runner, pieces, steps=6, seed=len(case), rtol=1e-5, atol=1e-5)


def test_steps_past_the_largest_bucket_run_whole(tmp_path):
    save_hf_model("llama", out=tmp_path)
    runner = make_runner(tmp_path)
    runner.allocate_cache(BLOCKS, BLOCK)
    pieces = PromptGraphs(runner.model, runner.kv_caches, max_tokens=16, device=runner.device,
                          capture=False)
    long = ForwardBatch(input_ids=list(range(17)), q_lens=[17], kv_lens=[17],
                        block_tables=[[0, 1]], need_logits=[True], block_size=BLOCK)
    assert not pieces.can_run(build_step_inputs(long, runner.device))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("quant_policy", [0, 8])
def test_captured_stretches_give_the_eager_logits_on_the_gpu(tmp_path, quant_policy):
    from lmforge.messages import PytorchEngineConfig
    from lmforge.model.loader import load_model_info
    from lmforge_torch_triton.runner import TorchModelRunner

    save_hf_model("llama", out=tmp_path)
    runner = TorchModelRunner(load_model_info(tmp_path), PytorchEngineConfig(
        device="cuda", dtype="float32", quant_policy=quant_policy, max_batch_size=8,
        max_prefill_token_num=128))
    runner.allocate_cache(BLOCKS, BLOCK)
    assert runner.prompt_graphs is not None and runner.prompt_graphs.buckets[-1] == 128
    replays = runner.prompt_graphs.replays
    compare(runner, runner.prompt_graphs, steps=12, seed=quant_policy, rtol=1e-4, atol=1e-4)
    assert runner.prompt_graphs.replays == replays + 12
    runner.close()
