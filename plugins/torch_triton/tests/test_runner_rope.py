"""Rope scaling in the runner against transformers: linear, dynamic NTK and llama3."""

from __future__ import annotations

import pytest
import torch
from torch_runner_helpers import (
    PagedDriver,
    PagedSeq,
    greedy,
    hf_greedy,
    hf_logits,
    make_runner,
    save_hf_model,
)

# Dynamic NTK only changes anything past the original context, so that model gets a short one.
SCALINGS = {
    "linear": dict(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}),
    "dynamic": dict(
        max_position_embeddings=16,
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
    ),
    "llama3": dict(
        rope_parameters={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8,
            "rope_theta": 500000.0,
        }
    ),
}
PROMPT = [1, 5, 9, 14, 22, 31, 40, 52, 63, 71, 80, 88, 95, 101, 110, 118, 3, 7, 12, 19]


@pytest.mark.parametrize("scaling", list(SCALINGS))
def test_rope_scaling_matches_transformers(scaling, tmp_path):
    reference = save_hf_model("llama", tmp_path, **SCALINGS[scaling])
    runner = make_runner(tmp_path)
    assert runner.config.rope.scaling_type == scaling
    # Logits first: transformers' dynamic rope keeps the longest length it has seen.
    logits = PagedDriver(runner).step([(PagedSeq(), PROMPT)], return_all_logits=True)
    torch.testing.assert_close(logits, hf_logits(reference, PROMPT), rtol=1e-4, atol=1e-4)
    assert greedy(PagedDriver(runner), [PROMPT], steps=16) == [hf_greedy(reference, PROMPT, 16)]


def test_rope_scaling_factor_turns_on_dynamic_ntk(tmp_path):
    save_hf_model("llama", tmp_path / "plain", max_position_embeddings=16)
    # The same weights (same seed) with dynamic NTK written into the config are the reference.
    reference = save_hf_model("llama", tmp_path / "dynamic", **SCALINGS["dynamic"])
    runner = make_runner(tmp_path / "plain", rope_scaling_factor=2.0)
    assert (runner.config.rope.scaling_type, runner.config.rope.factor) == ("dynamic", 2.0)
    assert runner.model_info.session_len == 32
    logits = PagedDriver(runner).step([(PagedSeq(), PROMPT)], return_all_logits=True)
    torch.testing.assert_close(logits, hf_logits(reference, PROMPT), rtol=1e-4, atol=1e-4)
