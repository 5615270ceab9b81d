"""The new families on a CUDA GPU, through the compiled Triton kernels and decode steps replayed
as CUDA graphs (the MoE alignment included), give transformers' greedy tokens in float32."""

from __future__ import annotations

import pytest
import torch
from test_runner_families import CASES, PROMPTS
from torch_runner_helpers import PagedDriver, greedy, hf_greedy, make_runner, save_hf_model

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)


@pytest.mark.parametrize("name", list(CASES))
def test_family_greedy_on_the_gpu_equals_transformers(name, tmp_path):
    reference = save_hf_model(**CASES[name], out=tmp_path)
    runner = make_runner(tmp_path, device="cuda")
    assert runner.ops.fused_moe.__module__.endswith("triton_moe")
    outputs = greedy(PagedDriver(runner), PROMPTS, steps=16)
    assert runner.graphs is not None and runner.graphs.replays > 0
    assert outputs == [hf_greedy(reference, p, 16) for p in PROMPTS]
