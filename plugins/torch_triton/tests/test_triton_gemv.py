"""Triton GEMV, plain and with SiLU-and-mul fused in, against the PyTorch reference."""

import os

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from conftest_triton import DEVICE, assert_close, make_generator, needs_gpu, needs_kernels, randn  # noqa: E402
from lmforge_torch_triton.ops import reference, triton_gemv  # noqa: E402

# Inputs of unit variance over K products: scale the weights so outputs stay O(1) and the
# tolerances of one output rounding apply.


def _weights(n, k, dtype, gen, with_bias):
    w = randn((n, k), dtype, gen) * k**-0.5
    bias = 0.1 * randn((n,), dtype, gen) if with_bias else None
    return w.to(dtype), bias


def check_linear(m, n, k, dtype, with_bias, seed=0):
    gen = make_generator(seed)
    x = randn((m, k), dtype, gen)
    w, bias = _weights(n, k, dtype, gen, with_bias)
    y = triton_gemv.linear(x, w, bias)
    assert y.dtype == dtype and y.shape == (m, n)
    assert_close(y, reference.linear(x, w, bias))


def fused_config(m):
    """Small blocks that force several K steps and ragged tiles on the small shapes."""
    if m == 1:
        return triton_gemv.GemvConfig(4, 64, 4, 1, use_dot=False)
    return triton_gemv.GemvConfig(16, 64, 4, 2, use_dot=True)


def check_silu_mul_linear(m, n, inter, dtype, with_bias, seed=0, config=None):
    gen = make_generator(seed)
    gate_up = randn((m, 2 * inter), dtype, gen)
    w, bias = _weights(n, inter, dtype, gen, with_bias)
    if config is None:
        y = triton_gemv.silu_mul_linear(gate_up, w, bias)
    else:
        bias = None
        y = triton_gemv.linear_with_config(gate_up, w, config, silu_mul=True)
    assert_close(y, reference.silu_mul_linear(gate_up, w, bias))


# Row counts: the one-row loop, the tl.dot path with padding rows, a full 16-row tile.
ROWS = [1, 3, 16]
# (N, K): blocks divide both; neither divides (masked loads and stores).
SHAPES = [(64, 256), (40, 100)]
INTERPRET_DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", INTERPRET_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("m", ROWS)
@pytest.mark.parametrize("with_bias", [False, True], ids=["no_bias", "bias"])
def test_linear_matches_reference(dtype, shape, m, with_bias):
    check_linear(m, *shape, dtype, with_bias)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", INTERPRET_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("m", ROWS)
def test_silu_mul_linear_matches_reference(dtype, shape, m):
    check_silu_mul_linear(m, *shape, dtype, with_bias=m == 3)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", INTERPRET_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("m", ROWS)
def test_fused_silu_mul_kernel_matches_reference(dtype, shape, m):
    check_silu_mul_linear(m, *shape, dtype, False, config=fused_config(m))


@pytest.mark.triton_interpret
@needs_kernels
def test_fp16_one_row():
    check_linear(1, 48, 80, torch.float16, with_bias=True)
    check_silu_mul_linear(1, 48, 80, torch.float16, with_bias=False)


@pytest.mark.triton_interpret
@needs_kernels
def test_many_rows_fall_back_to_the_unfused_path():
    m = triton_gemv.MAX_ROWS + 1
    check_linear(m, 32, 64, torch.float32, with_bias=True)
    check_silu_mul_linear(m, 32, 64, torch.float32, with_bias=False)


@pytest.mark.triton_interpret
@needs_kernels
def test_kernel_output_is_checked_against_reference():
    """A corrupted weight must make the comparison fail (the tests can fail)."""
    gen = make_generator(1)
    x = randn((2, 64), torch.float32, gen)
    w, _ = _weights(32, 64, torch.float32, gen, False)
    y = triton_gemv.linear(x, w)
    w_bad = w.clone()
    w_bad[5, 7] += 1.0
    with pytest.raises(AssertionError):
        assert_close(y, reference.linear(x, w_bad))


@pytest.mark.triton_interpret
@needs_kernels
def test_rejects_mismatched_k():
    x = torch.zeros(2, 64, device=DEVICE)
    with pytest.raises(ValueError, match="K=64"):
        triton_gemv.linear(x, torch.zeros(8, 32, device=DEVICE))


# Llama-3-8B: QKV, o_proj, gate/up, down and the LM head at decode batch sizes.
LLAMA3_8B = {
    "qkv": (6144, 4096),
    "o": (4096, 4096),
    "gate_up": (28672, 4096),
    "down": (4096, 14336),
    "lm_head": (128256, 4096),
}


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("m", [1, 4, 16])
@pytest.mark.parametrize("name", ["qkv", "gate_up", "lm_head"])
def test_linear_llama3_decode_shapes(dtype, m, name):
    check_linear(m, *LLAMA3_8B[name], dtype, with_bias=name == "qkv")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("m", [1, 4, 16])
def test_silu_mul_linear_llama3_shapes(dtype, m):
    n, inter = LLAMA3_8B["down"]
    check_silu_mul_linear(m, n, inter, dtype, with_bias=False)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("m", [1, 4])
def test_fused_kernels_llama3_shapes(dtype, m):
    config = triton_gemv.GemvConfig(16, 512, 4, 1, False) if m == 1 else \
        triton_gemv.GemvConfig(64, 128, 4, 3, True)
    check_silu_mul_linear(m, *LLAMA3_8B["down"], dtype, False, config=config)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("m", [1, 2, 8])
def test_linear_llama3_shapes(dtype, m):
    check_linear(m, *LLAMA3_8B["o"], dtype, with_bias=False)
