"""The pure-PyTorch quantized linears against the formats' definitions, on hand-made values."""

from __future__ import annotations

import pytest
import torch
from lmforge_torch_triton.ops import quant_reference as qr


def test_awq_pack_puts_columns_in_autoawq_order():
    # Column j holds value j: nibble i must hold column [0, 2, 4, 6, 1, 3, 5, 7][i].
    word = qr.awq_pack(torch.arange(8, dtype=torch.int32)[None, :])
    assert word.dtype == torch.int32 and word.shape == (1, 1)
    assert int(word) == 0x75316420
    # Bit 31 set: the word is a negative int32, as AutoAWQ's checkpoints store it.
    assert int(qr.awq_pack(torch.full((1, 8), 15))) == -1


def test_awq_unpack_inverts_pack():
    values = torch.randint(0, 16, (5, 24), generator=torch.Generator().manual_seed(0))
    packed = qr.awq_pack(values)
    assert packed.shape == (5, 3)
    assert torch.equal(qr.awq_unpack(packed), values.to(torch.int32))


@pytest.mark.parametrize("values", [torch.full((2, 8), 16), torch.full((2, 8), -1),
                                    torch.zeros(2, 6, dtype=torch.int32)], ids=str)
def test_awq_pack_rejects_what_four_bits_cannot_hold(values):
    with pytest.raises(ValueError, match="AWQ packs values 0..15"):
        qr.awq_pack(values)


def test_awq_dequantize_applies_each_groups_zero_and_scale():
    q = torch.tensor([[3] * 8, [15] * 8, [0] * 8, [7] * 8], dtype=torch.int32)  # K=4
    z = torch.tensor([[1] * 8, [8] * 8], dtype=torch.int32)  # group size 2
    s = torch.tensor([[0.5] * 8, [2.0] * 8], dtype=torch.float16)
    w = qr.awq_dequantize(qr.awq_pack(q), qr.awq_pack(z), s, group_size=2)
    assert w.dtype == torch.float16 and w.shape == (4, 8)
    expected = torch.tensor([1.0, 7.0, -16.0, -2.0])[:, None].expand(4, 8)
    assert torch.equal(w.float(), expected)
    assert qr.awq_dequantize(qr.awq_pack(q), qr.awq_pack(z), s, 2, torch.float32).dtype == \
        torch.float32


def test_awq_linear_is_x_times_the_dequantized_weight():
    gen = torch.Generator().manual_seed(1)
    q = torch.randint(0, 16, (64, 16), generator=gen)
    z = torch.randint(0, 16, (2, 16), generator=gen)
    s = torch.rand(2, 16, generator=gen) * 0.1
    x, bias = torch.randn(3, 64, generator=gen), torch.randn(16, generator=gen)
    w = (q - z.repeat_interleave(32, 0)).float() * s.repeat_interleave(32, 0)
    y = qr.awq_linear(x, qr.awq_pack(q), qr.awq_pack(z), s, 32, bias)
    torch.testing.assert_close(y, x @ w + bias)


def test_int8_quantization_rounds_half_to_even_and_scales_by_absmax():
    x = torch.tensor([[-254.0, 1.0, 3.0, 5.0, -0.9], [0.0, 0.0, 0.0, 0.0, 0.0]])
    xq, scale = qr.quantize_per_token(x, torch.int8)
    assert xq.dtype == torch.int8 and scale.dtype == torch.float32 and scale.shape == (2,)
    assert scale[0] == 2.0  # 254 / 127
    # 1/2, 3/2 and 5/2 round to even; an all-zero row has zero codes and a finite scale.
    assert xq.tolist() == [[-127, 0, 2, 2, 0], [0, 0, 0, 0, 0]]
    assert 0 < scale[1] < 1e-9


def test_fp8_quantization_maps_absmax_to_448():
    x = torch.tensor([[-44.8, 10.0, 0.3]], dtype=torch.bfloat16)
    xq, scale = qr.quantize_per_token(x, torch.float8_e4m3fn)
    assert xq.dtype == torch.float8_e4m3fn
    assert xq.float()[0, 0] == -448.0
    # 10 / scale = 100.0 (to bf16 precision of the input) lies between e4m3's 96 and 104.
    assert xq.float()[0, 1] in (96.0, 104.0)
    torch.testing.assert_close(xq.float() * scale[:, None], x.float(), rtol=0.07, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.int8, torch.float8_e4m3fn], ids=str)
def test_quantization_error_is_within_half_a_step(dtype):
    x = torch.randn(6, 300, generator=torch.Generator().manual_seed(2))
    xq, scale = qr.quantize_per_token(x, dtype)
    error = (xq.float() * scale[:, None] - x).abs()
    if dtype == torch.int8:
        assert (error <= scale[:, None] * 0.5 * (1 + 1e-6)).all()
    else:  # e4m3 keeps 3 mantissa bits: half a step is 1/16 of the value's binade
        assert (error <= x.abs() / 16 + scale[:, None] * 2**-9).all()


def test_w8a8_int8_linear_is_an_exact_int32_product_then_scaled():
    gen = torch.Generator().manual_seed(3)
    xq = torch.randint(-128, 128, (4, 4096), generator=gen, dtype=torch.int8)
    wq = torch.randint(-128, 128, (8, 4096), generator=gen, dtype=torch.int8)
    x_scale, w_scale = torch.rand(4, generator=gen), torch.rand(8, generator=gen)
    y = qr.w8a8_linear(xq, x_scale, wq, w_scale, out_dtype=torch.float32)
    # int32 sums, rounded to fp32 once (they reach 2**26, past fp32's exact integers).
    exact = (xq.to(torch.int32) @ wq.to(torch.int32).T).float()
    assert torch.equal(y, exact * x_scale[:, None] * w_scale[None, :])
    bias = torch.randn(8, generator=gen).to(torch.bfloat16)
    y16 = qr.w8a8_linear(xq, x_scale, wq, w_scale, bias, torch.bfloat16)
    assert y16.dtype == torch.bfloat16
    assert torch.equal(y16, (y + bias.float()).to(torch.bfloat16))


def test_w8a8_linear_approximates_the_float_product():
    gen = torch.Generator().manual_seed(4)
    x, w = torch.randn(5, 256, generator=gen), torch.randn(32, 256, generator=gen) / 16
    for dtype, bound in ((torch.int8, 0.02), (torch.float8_e4m3fn, 0.08)):
        wq, w_scale = qr.quantize_per_token(w, dtype)  # per output channel
        y = qr.w8a8_quant_linear(x, wq, w_scale)
        assert y.dtype == torch.float32
        exact = x @ w.T
        assert (y - exact).abs().max() / exact.abs().max() < bound


def test_fused_references_return_the_residual_and_quantize_the_activation():
    gen = torch.Generator().manual_seed(5)
    x, residual = torch.randn(3, 64, generator=gen), torch.randn(3, 64, generator=gen)
    weight = torch.rand(64, generator=gen) + 0.5
    xq, scale, new_residual = qr.rms_norm_quant(x, weight, 1e-6, residual)
    torch.testing.assert_close(new_residual, x + residual)
    normed = (x + residual) * torch.rsqrt((x + residual).pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(xq.float() * scale[:, None], normed * weight,
                               atol=float(scale.max()) / 2 + 1e-6, rtol=0)
    gate_up = torch.randn(3, 128, generator=gen)
    xq, scale = qr.silu_mul_quant(gate_up)
    act = torch.nn.functional.silu(gate_up[:, :64]) * gate_up[:, 64:]
    torch.testing.assert_close(xq.float() * scale[:, None], act,
                               atol=float(scale.max()) / 2 + 1e-6, rtol=0)
