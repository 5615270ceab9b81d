"""Teacher-forced steps of a runner, and the CUDA-graph runner's step logic on the CPU.

A decode graph's logits are a view of the graph's static output: the next replay of the same
bucket overwrites them. :func:`greedy_logits` therefore copies each step's logits; keeping the
views instead makes every earlier decode step read as the last one's logits.

:func:`replay_on_the_cpu` runs a runner's graph paths on the CPU: a decode "replay" runs the
captured forward again over the same static buffers (what a graph replays, minus what capture
bakes in), and prompt steps run as their stretches, uncaptured. It checks the buffer handling
(buckets, padding rows, static inputs and outputs), not the capture itself.
"""

from __future__ import annotations

import functools

import pytest
import torch
from lmforge_torch_triton import cuda_graph, piecewise_graph
from lmforge_torch_triton import runner as runner_module
from torch_runner_helpers import PagedDriver, PagedSeq

PROMPTS = [[1, 17, 42, 99, 5, 64, 23, 88, 11, 7, 120], [1, 9, 77, 31, 56, 2, 100]]

# Graph steps against eager steps of the tiny W8A8 models (bf16 activations, logits up to about
# 2.3 in magnitude). Moving every attention output by one bf16 ulp moves these logits by up to
# 0.06 (int8) and 0.15 (fp8) through the reference ops: the per-token 8-bit quantization turns
# ulp-level input changes into whole code steps. A stale, aliased or corrupted buffer moves them
# by the logits' own scale.
GRAPH_ATOL = 0.3


def greedy_logits(runner, steps: int, forced: list[torch.Tensor] | None = None,
                  returned: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """Each step's logits (copied: see the module's docstring): one batched prefill of
    :data:`PROMPTS`, then greedy decode steps (teacher-forced with the argmax of ``forced``'s
    steps where given, so two runs whose logits differ in rounding still see the same
    tokens). ``returned`` gets the tensors the runner returned, uncopied."""
    driver = PagedDriver(runner)
    seqs = [PagedSeq() for _ in PROMPTS]
    out: list[torch.Tensor] = []
    work = list(zip(seqs, PROMPTS, strict=True))
    for i in range(steps):
        if i:
            chosen = (forced[i - 1] if forced is not None else out[-1]).argmax(-1).tolist()
            work = [(s, [t]) for s, t in zip(seqs, chosen, strict=True)]
        logits = driver.step(work)
        out.append(logits.clone())
        if returned is not None:
            returned.append(logits)
    return out


def step_diffs(got: list[torch.Tensor], want: list[torch.Tensor]) -> list[float]:
    """The largest absolute logit difference of each step."""
    return [float((g - w).abs().max()) for g, w in zip(got, want, strict=True)]


def assert_graph_logits_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    """Graph steps give the eager steps' logits within :data:`GRAPH_ATOL`, on logits large
    enough that a broken step could not pass unseen."""
    assert max(float(w.abs().max()) for w in want) > 4 * GRAPH_ATOL
    diffs = step_diffs(got, want)
    assert max(diffs) <= GRAPH_ATOL, f"per-step max abs logit differences: {diffs}"


class _Replay:
    """Stands in for a captured ``torch.cuda.CUDAGraph``."""

    def __init__(self, replay) -> None:
        self.replay = replay


def _capture_on_the_cpu(self: cuda_graph.DecodeGraphs, size: int):
    inputs = self._inputs(size)
    static = self.forward(inputs, self.kv_caches).clone()
    return _Replay(lambda: static.copy_(self.forward(inputs, self.kv_caches))), static


def replay_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runners made after this call take their graph paths on the CPU (see the module's
    docstring) unless built with ``eager_mode``."""
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: None)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args: None)
    monkeypatch.setattr(cuda_graph.DecodeGraphs, "_capture", _capture_on_the_cpu)
    monkeypatch.setattr(runner_module, "PromptGraphs",
                        functools.partial(piecewise_graph.PromptGraphs, capture=False))
    monkeypatch.setattr(runner_module.TorchModelRunner, "_use_graphs",
                        lambda self: not self.engine_config.eager_mode)
