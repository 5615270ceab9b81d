"""rope_inv_freq against transformers' own rope initialisation functions."""

from __future__ import annotations

import pytest
import torch
from lmforge.errors import ModelLoadError
from lmforge.model.rope import rope_attention_factor, rope_from_hf, rope_inv_freq
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

PARAMS = {
    "linear": {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_theta": 500000.0,
    },
}


@pytest.mark.parametrize("kind", list(PARAMS))
@pytest.mark.parametrize("seq_len", [None, 100, 5000])
def test_inv_freq_matches_transformers(kind, seq_len):
    config = LlamaConfig(
        hidden_size=512,
        num_attention_heads=4,
        max_position_embeddings=1024,
        rope_parameters=PARAMS[kind],
    )
    expected, _ = ROPE_INIT_FUNCTIONS[kind](config, "cpu", seq_len=seq_len)
    rope = rope_from_hf(config.to_dict())
    torch.testing.assert_close(rope_inv_freq(rope, 128, seq_len), expected, rtol=1e-6, atol=0)


def test_old_style_rope_scaling_and_lmdeploy_factor():
    old = {
        "rope_theta": 5e5,
        "rope_scaling": {"type": "linear", "factor": 2.0},
        "max_position_embeddings": 4096,
    }
    rope = rope_from_hf(old)
    assert (rope.theta, rope.scaling_type, rope.factor) == (5e5, "linear", 2.0)
    rope = rope_from_hf(old, rope_scaling_factor=3.0)
    assert (rope.scaling_type, rope.factor) == ("dynamic", 3.0)
    assert rope.extra["original_max_position_embeddings"] == 4096
    assert (
        rope_from_hf({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}).scaling_type
        is None
    )


def test_unsupported_scaling_is_named():
    with pytest.raises(ModelLoadError, match="'yarn'"):
        rope_from_hf({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
    with pytest.raises(ModelLoadError, match="'short_factor'"):
        rope_from_hf({"rope_scaling": {"rope_type": "longrope", "long_factor": [1.0]}})


@pytest.mark.parametrize("seq_len", [None, 4096, 4097])
@pytest.mark.parametrize("given_factor", [False, True])
def test_longrope_matches_transformers(seq_len, given_factor):
    """Phi-3-mini-128k's layout: the pretraining length at the config's top level, the factor
    from the two lengths unless given; 'su' is LongRoPE's older name."""
    from transformers import Phi3Config

    params = {"rope_type": "su", "short_factor": [1.0 + 0.01 * i for i in range(16)],
              "long_factor": [1.0 + 0.5 * i for i in range(16)]}
    if given_factor:
        params["factor"] = 4.0
    hf = {"hidden_size": 128, "num_attention_heads": 4, "max_position_embeddings": 131072,
          "original_max_position_embeddings": 4096, "rope_theta": 10000.0, "rope_scaling": params}
    config = Phi3Config(**{**hf, "rope_scaling": {**params, "rope_type": "longrope"}})
    expected, scale = ROPE_INIT_FUNCTIONS["longrope"](config, "cpu", seq_len=seq_len)
    rope = rope_from_hf(hf)
    assert rope.scaling_type == "longrope"
    torch.testing.assert_close(rope_inv_freq(rope, 32, seq_len), expected, rtol=1e-6, atol=0)
    assert rope_attention_factor(rope) == pytest.approx(scale)
