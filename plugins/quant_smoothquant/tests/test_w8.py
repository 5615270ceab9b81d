"""W8A8 numbers: per-channel weights and per-token activations, int8 and fp8 e4m3."""

from __future__ import annotations

import pytest
import torch
from lmforge_quant_smoothquant.quantize import smoothing_scales
from lmforge_quant_smoothquant.w8 import (
    fake_quantize_tokens,
    fake_quantize_weight,
    quantize_weight,
)


def test_int8_weights_follow_lmdeploys_per_channel_rule():
    w = torch.randn(6, 40, generator=torch.Generator().manual_seed(0)) * 3
    q, scale = quantize_weight(w, torch.int8)
    assert q.dtype == torch.int8 and q.shape == (6, 40)
    assert scale.dtype == torch.float32 and scale.shape == (6, 1)
    torch.testing.assert_close(scale, w.abs().amax(1, keepdim=True) / 127)
    assert torch.equal(q, torch.round(w / scale).clamp(-128, 127).to(torch.int8))
    assert torch.equal(q.abs().amax(1), torch.full((6,), 127, dtype=torch.int8))


def test_fp8_weights_use_448_as_the_top_of_the_range():
    w = torch.randn(4, 32) * 0.01
    q, scale = quantize_weight(w, torch.float8_e4m3fn)
    assert q.dtype == torch.float8_e4m3fn
    torch.testing.assert_close(q.float().abs().amax(1), torch.full((4,), 448.0))
    torch.testing.assert_close(q.float() * scale, w, rtol=0.07, atol=0)


@pytest.mark.parametrize("dtype, rel", [(torch.int8, 0.01), (torch.float8_e4m3fn, 0.07)])
def test_token_quantization_is_per_row(dtype, rel):
    x = torch.randn(5, 64)
    x[2] *= 1000  # one loud token does not coarsen the others
    y = fake_quantize_tokens(x, dtype)
    assert ((y - x).abs() <= rel * x.abs().amax(1, keepdim=True)).all()
    assert fake_quantize_weight(x, dtype).shape == x.shape


def test_a_zero_row_stays_zero():
    x = torch.zeros(2, 8)
    assert torch.equal(fake_quantize_tokens(x, torch.int8), x)
    assert torch.equal(fake_quantize_weight(x, torch.float8_e4m3fn), x)


def test_smoothing_scales_balance_activation_and_weight_ranges():
    x_max = torch.tensor([1.0, 100.0, 4.0])
    w = torch.tensor([[1.0, 0.01, 1.0], [0.5, 0.02, 4.0]])
    s = smoothing_scales(x_max, [w], alpha=0.5)
    raw = x_max.sqrt() / w.abs().amax(0).sqrt()
    torch.testing.assert_close(s, raw / (raw.max() * raw.min()).sqrt())
    # After smoothing the activation and weight ranges of each channel are equal up to a constant.
    ratio = (x_max / s) / (w.abs().amax(0) * s)
    torch.testing.assert_close(ratio / ratio[0], torch.ones(3))
