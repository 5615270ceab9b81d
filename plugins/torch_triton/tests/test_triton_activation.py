"""Triton ``silu_and_mul`` and ``gelu_tanh_and_mul`` against the PyTorch reference."""

import os

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from conftest_triton import DTYPES, assert_close, make_generator, needs_gpu, needs_kernels, randn  # noqa: E402
from lmforge_torch_triton.ops import reference  # noqa: E402
from lmforge_torch_triton.ops.triton_activation import (  # noqa: E402
    gelu_tanh_and_mul,
    silu_and_mul,
)

KERNELS = {"silu": (silu_and_mul, reference.silu_and_mul),
           "gelu_tanh": (gelu_tanh_and_mul, reference.gelu_tanh_and_mul)}


def check_act_and_mul(tokens, inter, dtype, act="silu"):
    kernel, expected = KERNELS[act]
    # Scaled so some gates reach the saturated ends of the sigmoid (or tanh).
    x = 4 * randn((tokens, 2 * inter), dtype, make_generator(inter))
    out = kernel(x)
    assert out.shape == (tokens, inter) and out.dtype == dtype
    assert_close(out, expected(x))


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("inter", [96, 1500])
@pytest.mark.parametrize("act", list(KERNELS))
def test_act_and_mul_matches_reference(dtype, inter, act):
    check_act_and_mul(5, inter, dtype, act)


@pytest.mark.triton_interpret
@needs_kernels
def test_silu_and_mul_rejects_odd_width():
    with pytest.raises(ValueError, match=r"\[T, 2\*I\]"):
        silu_and_mul(torch.zeros(2, 7))


# Llama-3-8B intermediate size; a decode batch and a long prefill.
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("tokens", [64, 4096])
def test_silu_and_mul_llama3_shapes(dtype, tokens):
    check_act_and_mul(tokens, 14336, dtype)


# Gemma-2-9B's intermediate size.
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("tokens", [1, 4096])
def test_gelu_tanh_and_mul_gemma2_shapes(tokens):
    check_act_and_mul(tokens, 14336, torch.bfloat16, "gelu_tanh")
