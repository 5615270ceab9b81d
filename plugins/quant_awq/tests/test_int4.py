"""Group-wise int4 quantization and AutoAWQ's GEMM packing, against the layout's definition."""

from __future__ import annotations

import pytest
import torch
from lmforge_quant_awq.int4 import (
    PACK_ORDER,
    AwqTensors,
    fake_quantize,
    group_params,
    pack,
    quantize_linear,
    unpack,
)


def _pack_by_definition(values: torch.Tensor) -> torch.Tensor:
    """AutoAWQ's loop: for each int32 column, nibble i takes column PACK_ORDER[i] of its 8."""
    rows, cols = values.shape
    out = torch.zeros(rows, cols // 8, dtype=torch.int64)
    for col in range(cols // 8):
        for i in range(8):
            out[:, col] |= values[:, col * 8 + PACK_ORDER[i]].to(torch.int64) << (4 * i)
    return torch.where(out >= 2**31, out - 2**32, out).to(torch.int32)


def test_pack_matches_the_layout_and_unpacks_back():
    values = torch.randint(0, 16, (5, 24), generator=torch.Generator().manual_seed(0))
    packed = pack(values)
    assert packed.dtype == torch.int32 and packed.shape == (5, 3)
    assert torch.equal(packed, _pack_by_definition(values))
    assert torch.equal(unpack(packed), values.to(torch.int32))


def test_nibble_positions():
    values = torch.arange(8)[None, :]  # column c holds value c
    word = int(pack(values)[0, 0]) & 0xFFFFFFFF
    assert [(word >> (4 * i)) & 0xF for i in range(8)] == [0, 2, 4, 6, 1, 3, 5, 7]


@pytest.mark.parametrize("zero_point", [True, False])
def test_dequantized_file_equals_the_fake_quantized_weight(zero_point):
    w = torch.randn(48, 128, generator=torch.Generator().manual_seed(1))
    tensors = quantize_linear(w, group_size=32, zero_point=zero_point)
    assert tensors.qweight.shape == (128, 6) and tensors.qzeros.shape == (4, 6)
    assert tensors.scales.shape == (4, 48) and tensors.scales.dtype == torch.float16
    # The file's integers are computed against its float16 scales: exact round trip.
    scales, zeros = group_params(w, 32, zero_point)
    scales = scales.half().float()
    q = unpack(tensors.qweight).t().reshape(48, 4, 32).float()
    expected = ((q - zeros[..., None]) * scales[..., None]).reshape(48, 128)
    torch.testing.assert_close(tensors.dequantize(), expected)
    torch.testing.assert_close(tensors.dequantize(), fake_quantize(w, 32, zero_point))


def test_asymmetric_groups_use_the_full_range_and_zero_points_stay_in_range():
    w = torch.rand(8, 64, generator=torch.Generator().manual_seed(4)) * 3 - 1  # [-1, 2]: off-center
    tensors = quantize_linear(w, group_size=64)
    q = unpack(tensors.qweight)
    assert q.min() == 0 and q.max() == 15
    assert 0 <= unpack(tensors.qzeros).min() and unpack(tensors.qzeros).max() <= 15


def test_symmetric_uses_zero_point_eight():
    tensors = quantize_linear(torch.randn(8, 64), group_size=32, zero_point=False)
    assert torch.all(unpack(tensors.qzeros) == 8)


def test_rounding_error_is_at_most_half_a_step():
    w = torch.randn(16, 256, generator=torch.Generator().manual_seed(2))
    scales, _ = group_params(w, 64)
    err = (fake_quantize(w, 64) - w).abs().reshape(16, 4, 64)
    assert torch.all(err <= scales[..., None] * 0.501)  # half a (float16-rounded) step


def test_awq_tensors_know_their_group_size():
    tensors = AwqTensors(torch.zeros(256, 2, dtype=torch.int32), torch.zeros(2, 2, dtype=torch.int32),
                         torch.ones(2, 16, dtype=torch.float16))
    assert tensors.group_size == 128
    assert tensors.dequantize().shape == (16, 256)
