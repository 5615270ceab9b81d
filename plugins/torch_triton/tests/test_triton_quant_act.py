"""Triton per-token activation quantization (alone, after RMSNorm, after SiLU-and-mul) against
the PyTorch reference.

Bounds: quantizing a given row is the reference's arithmetic exactly (IEEE divisions, ties to
even), so codes and scales are equal. Where an RMSNorm or SiLU-and-mul comes first, its rounded
output may differ from PyTorch's in the last bit (approximate ``rsqrt``/``exp`` on the GPU), which
can move a code by one step: then every dequantized value is within one quantization step of the
reference's (int8: the row's scale; e4m3: an eighth of the value), at most 1 % of the codes
differ, and scales agree to 2**-7.
"""

import os

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from conftest_triton import (  # noqa: E402
    assert_close,
    fp8_quantizing_needs_gpu,
    make_generator,
    needs_gpu,
    needs_kernels,
    poison_allocator,
    randn,
)
from lmforge_torch_triton.ops import quant_reference, triton_quant_act  # noqa: E402


def assert_codes_equal(xq, scale, ref_xq, ref_scale):
    assert torch.isfinite(scale).all(), "scales have NaN or inf"
    assert xq.dtype == ref_xq.dtype and xq.shape == ref_xq.shape
    assert torch.equal(scale, ref_scale)
    assert torch.equal(xq.float(), ref_xq.float())


def assert_codes_close(xq, scale, ref_xq, ref_scale):
    assert torch.isfinite(scale).all(), "scales have NaN or inf"
    assert xq.dtype == ref_xq.dtype and xq.shape == ref_xq.shape
    torch.testing.assert_close(scale, ref_scale, atol=0, rtol=2**-7)
    values = xq.float() * scale[:, None]
    ref_values = ref_xq.float() * ref_scale[:, None]
    if xq.dtype == torch.int8:
        step = torch.maximum(scale, ref_scale)[:, None]
    else:
        step = ref_values.abs() / 8 + ref_scale[:, None] * 2**-9
    assert ((values - ref_values).abs() <= step * 1.001).all()
    assert (xq.float() != ref_xq.float()).float().mean() <= 0.01


def rows_with_a_zero_one(m, k, dtype, gen):
    x = randn((m, k), dtype, gen)
    x[m // 2] = 0  # an all-zero row: zero codes, a finite scale
    return x


def check_quantize(m, k, dtype, qdtype, seed=0):
    x = rows_with_a_zero_one(m, k, dtype, make_generator(seed))
    poison_allocator(((m,), torch.float32))
    xq, scale = triton_quant_act.quantize_per_token(x, qdtype)
    assert_codes_equal(xq, scale, *quant_reference.quantize_per_token(x, qdtype))


def check_rms_norm_quant(m, k, dtype, qdtype, with_residual, seed=0):
    gen = make_generator(seed)
    x = rows_with_a_zero_one(m, k, dtype, gen)
    weight = 1.0 + 0.1 * randn((k,), dtype, gen)
    residual = randn((m, k), dtype, gen) if with_residual else None
    expected = quant_reference.rms_norm_quant(x, weight, 1e-5, residual, qdtype)
    poison_allocator(((m,), torch.float32), ((m, k), dtype))
    xq, scale, new_residual = triton_quant_act.rms_norm_quant(x, weight, 1e-5, residual, qdtype)
    assert_codes_close(xq, scale, *expected[:2])
    if with_residual:
        assert_close(new_residual, expected[2])
    else:
        assert new_residual is None


def check_silu_mul_quant(m, inter, dtype, qdtype, seed=0):
    gate_up = randn((m, 2 * inter), dtype, make_generator(seed))
    poison_allocator(((m,), torch.float32))
    xq, scale = triton_quant_act.silu_mul_quant(gate_up, qdtype)
    assert_codes_close(xq, scale, *quant_reference.silu_mul_quant(gate_up, qdtype))


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("k", [64, 100])
def test_quantize_per_token_int8(dtype, k):
    check_quantize(3, k, dtype, torch.int8)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
def test_rms_norm_quant_int8(dtype, with_residual):
    check_rms_norm_quant(3, 100, dtype, torch.int8, with_residual)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_silu_mul_quant_int8(dtype):
    check_silu_mul_quant(3, 72, dtype, torch.int8)


@pytest.mark.triton_interpret
@needs_kernels
def test_truncating_instead_of_rounding_would_fail():
    x = randn((4, 256), torch.float32, make_generator(1))
    xq, scale = quant_reference.quantize_per_token(x, torch.int8)
    truncated = (x * (127 / x.abs().amax(-1))[:, None]).trunc().to(torch.int8)
    with pytest.raises(AssertionError):
        assert_codes_close(truncated, scale, xq, scale)
    ours, ours_scale = triton_quant_act.quantize_per_token(x, torch.int8)
    assert_codes_equal(ours, ours_scale, xq, scale)


@pytest.mark.triton_interpret
@needs_kernels
def test_rejects_a_type_without_kernels():
    with pytest.raises(ValueError, match="torch.int8 or torch.float8_e4m3fn"):
        triton_quant_act.quantize_per_token(torch.zeros(2, 8), torch.float16)


@pytest.mark.triton_interpret
@needs_kernels
@fp8_quantizing_needs_gpu
def test_quantize_per_token_fp8():
    check_quantize(3, 100, torch.bfloat16, torch.float8_e4m3fn)


QDTYPES = [torch.int8, torch.float8_e4m3fn]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("qdtype", QDTYPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("m", [1, 64, 8192])
def test_llama3_quantize_per_token(m, dtype, qdtype):
    check_quantize(m, 4096, dtype, qdtype, seed=m)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("qdtype", QDTYPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("m", [1, 256])
def test_llama3_rms_norm_quant(m, dtype, qdtype):
    check_rms_norm_quant(m, 4096, dtype, qdtype, with_residual=True, seed=m)
    check_rms_norm_quant(m, 4096, dtype, qdtype, with_residual=False, seed=m + 1)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("qdtype", QDTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 256])
def test_llama3_silu_mul_quant(m, qdtype):
    check_silu_mul_quant(m, 14336, torch.bfloat16, qdtype, seed=m)
