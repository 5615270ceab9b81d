"""The CUDA-graph runner's step logic on the CPU (:func:`graph_steps.replay_on_the_cpu`): W8A8
decode steps replayed over static buffers and prompt steps run as stretches give the eager
runner's logits; a decode step's logits are a view that the next replay overwrites; and a
corrupted static buffer fails the graph-against-eager comparison the GPU tests use."""

from __future__ import annotations

import pytest
import torch
from graph_steps import (
    GRAPH_ATOL,
    assert_graph_logits_close,
    greedy_logits,
    replay_on_the_cpu,
    step_diffs,
)
from lmforge.messages import PytorchEngineConfig
from lmforge.model.loader import load_model_info
from lmforge_torch_triton import cuda_graph
from lmforge_torch_triton.runner import TorchModelRunner
from quant_checkpoints import save_w8a8_model
from torch_runner_helpers import PagedDriver, PagedSeq

FP8 = torch.float8_e4m3fn
STEPS = 5


def make_runner(path, eager: bool) -> TorchModelRunner:
    config = PytorchEngineConfig(device="cpu", dtype="bfloat16", max_batch_size=8,
                                 eager_mode=eager, max_prefill_token_num=64)
    return TorchModelRunner(load_model_info(path), config)


@pytest.fixture(params=[torch.int8, FP8], ids=["int8", "fp8"])
def w8a8_dir(request, tmp_path):
    save_w8a8_model(tmp_path, "compressed-tensors", request.param)
    return tmp_path


def test_graph_steps_give_the_eager_logits(w8a8_dir, monkeypatch):
    eager = greedy_logits(make_runner(w8a8_dir, eager=True), STEPS)
    replay_on_the_cpu(monkeypatch)
    runner = make_runner(w8a8_dir, eager=False)
    got = greedy_logits(runner, STEPS, forced=eager)
    assert runner.graphs.replays == STEPS - 1 and runner.prompt_graphs.replays == 1
    # The same ops on the same rows: bit-equal here.
    assert step_diffs(got, eager) == [0.0] * STEPS


def test_a_decode_steps_logits_are_overwritten_by_the_next_replay(w8a8_dir, monkeypatch):
    replay_on_the_cpu(monkeypatch)
    driver = PagedDriver(make_runner(w8a8_dir, eager=False))
    seqs = [PagedSeq(), PagedSeq()]
    driver.step([(seqs[0], [1, 5, 9]), (seqs[1], [1, 7])])
    first = driver.step([(s, [3]) for s in seqs])
    kept = first.clone()
    second = driver.step([(s, [4]) for s in seqs])
    assert first.data_ptr() == second.data_ptr()
    assert torch.equal(first, second) and not torch.equal(first, kept)


def test_a_corrupted_static_buffer_fails_the_comparison(w8a8_dir, monkeypatch):
    """A decode graph that reads one position too far (a stale static input) is caught."""
    eager = greedy_logits(make_runner(w8a8_dir, eager=True), STEPS)
    replay_on_the_cpu(monkeypatch)
    monkeypatch.setattr(cuda_graph.DecodeGraphs, "_capture", _corrupting(
        cuda_graph.DecodeGraphs._capture))
    got = greedy_logits(make_runner(w8a8_dir, eager=False), STEPS, forced=eager)
    assert max(step_diffs(got, eager)) > 2 * GRAPH_ATOL
    with pytest.raises(AssertionError):
        assert_graph_logits_close(got, eager)


def _corrupting(capture):
    """A capture whose replays rotate every query and key as the next position (the cache
    slots are computed before): what a stale static input does to a graph."""

    def captured(self, size):
        graph, logits = capture(self, size)
        replay = graph.replay

        def stale_replay():
            self.positions[:size].add_(1)
            replay()
            self.positions[:size].sub_(1)

        graph.replay = stale_replay
        return graph, logits

    return captured
