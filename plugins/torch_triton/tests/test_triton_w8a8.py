"""Triton W8A8 matmuls (int8 and fp8 e4m3) against the PyTorch reference.

Bounds: inputs are quantized from unit-variance activations and weights scaled by 1/sqrt(K), so
outputs are of unit size. int8 sums are exact (int32), so only the fp32 epilogue's rounding
(which may contract into an FMA) and the output's differ: the dtype's tolerance of
``conftest_triton.TOLERANCES``. fp8 products are exact but fp32 sums run in another order (and
Hopper's fp8 tensor cores accumulate with fewer mantissa bits): 2e-2 absolute and relative.
Where the kernel quantizes its own input, the codes are the quantization kernel's (see
``test_triton_quant_act.py``), compared against the reference's quantize-then-multiply.
"""

import os

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from conftest_triton import (  # noqa: E402
    DEVICE,
    LLAMA3_8B_LINEARS,
    TOLERANCES,
    fp8_quantizing_needs_gpu,
    make_generator,
    needs_gpu,
    needs_kernels,
    poison_allocator,
    randn,
)
from lmforge_torch_triton.ops import quant_reference, triton_w8a8  # noqa: E402
from lmforge_torch_triton.ops.triton_quant_common import (  # noqa: E402
    MatmulConfig,
    split_k_workspace,
)

INT8, FP8 = torch.int8, torch.float8_e4m3fn


def assert_matches(y, expected, qdtype):
    assert torch.isfinite(y).all(), "kernel output has NaN or inf"
    assert torch.isfinite(expected).all(), "reference output has NaN or inf"
    assert y.dtype == expected.dtype and y.shape == expected.shape
    tolerance = TOLERANCES[y.dtype] if qdtype == INT8 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(y, expected, **tolerance)


def make_weight(n, k, qdtype, gen):
    w = randn((n, k), torch.float32, gen) * k**-0.5
    return quant_reference.quantize_per_token(w, qdtype)  # per output channel


def check(m, k, n, qdtype, out_dtype=torch.bfloat16, config=None, prologue="",
          with_bias=False, seed=0):
    """The matmul on quantized ``x`` (prologue ""), or quantizing a float ``x`` ("quant") or
    ``silu(gate) * up`` ("silu") itself; against the reference."""
    gen = make_generator(seed)
    wq, w_scale = make_weight(n, k, qdtype, gen)
    x = randn((m, 2 * k if prologue == "silu" else k), out_dtype, gen)
    bias = 0.1 * randn((n,), out_dtype, gen) if with_bias else None
    if prologue == "silu":
        expected = quant_reference.w8a8_silu_mul_linear(x, wq, w_scale, bias)
    elif prologue == "quant":
        expected = quant_reference.w8a8_quant_linear(x, wq, w_scale, bias)
    else:
        x, x_scale = quant_reference.quantize_per_token(x, qdtype)
        expected = quant_reference.w8a8_linear(x, x_scale, wq, w_scale, bias, out_dtype)
    poison_allocator(((m, n), out_dtype))
    if config is not None:
        y = triton_w8a8.launch(x, None if prologue else x_scale, wq, w_scale, bias, out_dtype,
                               config, prologue)
    elif prologue == "silu":
        y = triton_w8a8.w8a8_silu_mul_linear(x, wq, w_scale, bias)
    elif prologue == "quant":
        y = triton_w8a8.w8a8_quant_linear(x, wq, w_scale, bias)
    else:
        y = triton_w8a8.w8a8_linear(x, x_scale, wq, w_scale, bias, out_dtype)
    assert_matches(y, expected, qdtype)
    return y


INTERPRET_CONFIGS = {
    "row": MatmulConfig(1, 4, 64, 1, 4, 1),
    "row_split": MatmulConfig(1, 8, 32, 3, 4, 1),
    "dot": MatmulConfig(16, 16, 32, 1, 4, 2),
    "dot_split": MatmulConfig(16, 32, 32, 2, 4, 1),
}
# (M, K, N): blocks divide N and K; M, N and K ragged against them.
INTERPRET_SHAPES = [(1, 128, 64), (3, 100, 40)]


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("qdtype", [INT8, FP8], ids=str)
@pytest.mark.parametrize("shape", INTERPRET_SHAPES, ids=str)
@pytest.mark.parametrize("config", INTERPRET_CONFIGS, ids=str)
def test_kernel_matches_reference(qdtype, shape, config):
    check(*shape, qdtype, torch.float16, INTERPRET_CONFIGS[config], with_bias=shape[0] == 3)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("prologue", ["quant", "silu"], ids=str)
@pytest.mark.parametrize("config", ["row_split", "dot"], ids=str)
def test_kernel_quantizing_its_input_matches_reference(prologue, config):
    check(3, 100, 40, INT8, torch.float16, INTERPRET_CONFIGS[config], prologue)


@pytest.mark.triton_interpret
@needs_kernels
@fp8_quantizing_needs_gpu
def test_kernel_quantizing_its_input_fp8():
    check(3, 100, 40, FP8, torch.float16, INTERPRET_CONFIGS["dot"], "quant")


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16], ids=str)
def test_output_dtypes(out_dtype):
    check(2, 64, 32, INT8, out_dtype, INTERPRET_CONFIGS["dot"], with_bias=True)


@pytest.mark.triton_interpret
@needs_kernels
def test_split_k_leaves_its_workspace_zero():
    y1 = check(1, 128, 64, INT8, torch.float16, INTERPRET_CONFIGS["row_split"])
    whole, _ = split_k_workspace(torch.device(DEVICE), 1 << 20, 0)
    assert not whole.any()
    assert torch.equal(y1, check(1, 128, 64, INT8, torch.float16,
                                 INTERPRET_CONFIGS["row_split"]))


@pytest.mark.triton_interpret
@needs_kernels
def test_ops_use_the_tables(monkeypatch):
    check(1, 128, 64, INT8, torch.float16, with_bias=True)
    check(3, 128, 64, FP8, torch.float16)
    check(1, 128, 64, INT8, torch.float16, prologue="quant")
    check(2, 64, 32, INT8, torch.float16, prologue="silu")  # quantize kernel, then matmul
    monkeypatch.setitem(triton_w8a8.FUSED_CONFIGS, ("silu", 16, "narrow"),
                        INTERPRET_CONFIGS["dot"])
    check(2, 64, 32, INT8, torch.float16, prologue="silu")


def check_int_mm(m, k, n, with_bias, seed=0):
    """cuBLASLt's int8 product (torch._int_mm) with the scale epilogue kernel."""
    gen = make_generator(seed)
    wq, w_scale = make_weight(n, k, INT8, gen)
    xq, x_scale = quant_reference.quantize_per_token(randn((m, k), torch.float32, gen))
    bias = 0.1 * randn((n,), torch.bfloat16, gen) if with_bias else None
    poison_allocator(((m, n), torch.bfloat16))
    y = triton_w8a8.int_mm_linear(xq, x_scale, wq, w_scale, bias, torch.bfloat16)
    assert_matches(y, quant_reference.w8a8_linear(xq, x_scale, wq, w_scale, bias), INT8)


@pytest.mark.triton_interpret
@needs_kernels
def test_int_mm_epilogue_matches_reference():
    check_int_mm(40, 64, 136, with_bias=True)


@pytest.mark.triton_interpret
@needs_kernels
def test_a_corrupted_weight_fails_the_comparison():
    gen = make_generator(4)
    wq, w_scale = make_weight(32, 64, INT8, gen)
    xq, x_scale = quant_reference.quantize_per_token(randn((1, 64), torch.float32, gen))
    y = triton_w8a8.launch(xq, x_scale, wq, w_scale, None, torch.float32,
                           INTERPRET_CONFIGS["row"])
    bad = wq.clone()
    bad[3, 9] += 5
    with pytest.raises(AssertionError):
        assert_matches(y, quant_reference.w8a8_linear(xq, x_scale, bad, w_scale,
                                                      out_dtype=torch.float32), INT8)


@pytest.mark.triton_interpret
@needs_kernels
def test_rejects_inconsistent_tensors():
    gen = make_generator(5)
    wq, w_scale = make_weight(32, 64, INT8, gen)
    xq, x_scale = quant_reference.quantize_per_token(randn((2, 64), torch.float32, gen))
    with pytest.raises(ValueError, match="must share a type"):
        triton_w8a8.w8a8_linear(xq.to(FP8), x_scale, wq, w_scale)
    with pytest.raises(ValueError, match="x_scale must be float32"):
        triton_w8a8.w8a8_linear(xq, x_scale[:1], wq, w_scale)
    with pytest.raises(ValueError, match="w_scale must be float32"):
        triton_w8a8.w8a8_linear(xq, x_scale, wq, w_scale.half())
    with pytest.raises(ValueError, match="K=64"):
        triton_w8a8.w8a8_linear(xq, x_scale, wq[:, :32], w_scale)




@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("qdtype", [INT8, FP8], ids=str)
@pytest.mark.parametrize("m", [1, 16, 64, 256])
@pytest.mark.parametrize("name", LLAMA3_8B_LINEARS, ids=str)
def test_llama3_shapes(name, m, qdtype):
    check(m, *LLAMA3_8B_LINEARS[name], qdtype, with_bias=name == "qkv", seed=m)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("qdtype", [INT8, FP8], ids=str)
def test_llama3_prefill(qdtype):
    check(8192, *LLAMA3_8B_LINEARS["gate_up"], qdtype, seed=3)
    check(8192, *LLAMA3_8B_LINEARS["down"], qdtype, seed=4)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("m", [256, 8192])
def test_llama3_int8_through_int_mm(m):
    check_int_mm(m, *LLAMA3_8B_LINEARS["gate_up"], with_bias=m == 256, seed=10)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("m", [256, 8192])
def test_llama3_fp8_triton_kernel_at_large_m(m):
    """The op runs torch._scaled_mm there; the Triton kernel must hold too (fp16 outputs and
    shapes cuBLASLt refuses take it)."""
    k, n = LLAMA3_8B_LINEARS["qkv"]
    check(m, k, n, FP8, config=triton_w8a8.pick_config(m, n, k), seed=9)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("qdtype", [INT8, FP8], ids=str)
@pytest.mark.parametrize("m", [1, 16])
def test_llama3_quantizing_inside(m, qdtype):
    check(m, *LLAMA3_8B_LINEARS["o"], qdtype, prologue="quant", seed=5)
    check(m, *LLAMA3_8B_LINEARS["down"], qdtype, prologue="silu", seed=6)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("m", [1, 64])
def test_llama3_fp16_output(m):
    check(m, *LLAMA3_8B_LINEARS["qkv"], INT8, torch.float16, with_bias=True, seed=7)
    check(m, *LLAMA3_8B_LINEARS["qkv"], FP8, torch.float16, seed=8)
