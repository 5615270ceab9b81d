"""Triton RMSNorm (alone and fused with the residual add) against the PyTorch reference."""

import os

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from conftest_triton import DTYPES, assert_close, make_generator, needs_gpu, needs_kernels, randn  # noqa: E402
from lmforge_torch_triton.ops import reference  # noqa: E402
from lmforge_torch_triton.ops.triton_rms_norm import rms_norm  # noqa: E402


def check_rms_norm(tokens, hidden, dtype, with_residual, offset=0.0):
    gen = make_generator(hidden)
    x = randn((tokens, hidden), dtype, gen)
    weight = 1.0 - offset + 0.1 * randn((hidden,), dtype, gen)
    residual = randn((tokens, hidden), dtype, gen) if with_residual else None
    x_before = x.clone()

    out, new_residual = rms_norm(x, weight, 1e-5, residual, offset)
    ref_out, ref_residual = reference.rms_norm(x, weight, 1e-5, residual, offset)
    assert out.dtype == dtype
    assert torch.equal(x, x_before), "x must not be modified in place"
    assert_close(out, ref_out)
    if with_residual:
        # Not bit-exact: the interpreter rounds fp32 -> bf16 toward zero, a GPU to nearest even.
        assert_close(new_residual, ref_residual)
    else:
        assert new_residual is None


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hidden", [64, 100])
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
def test_rms_norm_matches_reference(dtype, hidden, with_residual):
    check_rms_norm(7, hidden, dtype, with_residual)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rms_norm_with_offset_matches_reference(dtype):
    """Gemma's norm: the scale is 1 + weight, applied in float32 before the cast."""
    check_rms_norm(5, 48, dtype, True, offset=1.0)


@pytest.mark.triton_interpret
@needs_kernels
def test_rms_norm_rejects_wrong_weight():
    x = torch.zeros(2, 8)
    with pytest.raises(ValueError, match="weight"):
        rms_norm(x, torch.ones(4), 1e-5)


# Llama-3-8B hidden size; a decode batch and a long prefill.
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("tokens", [64, 8192])
@pytest.mark.parametrize("with_residual", [False, True], ids=["plain", "residual"])
def test_rms_norm_llama3_shapes(dtype, tokens, with_residual):
    check_rms_norm(tokens, 4096, dtype, with_residual)


# Gemma-2-9B's hidden size, its norms scaling by 1 + weight.
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("tokens", [1, 4096])
def test_rms_norm_gemma2_shapes(tokens):
    check_rms_norm(tokens, 3584, torch.bfloat16, True, offset=1.0)
