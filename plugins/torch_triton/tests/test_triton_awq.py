"""Triton W4A16 kernels (AutoAWQ layout) against the PyTorch reference.

Bounds: weights are scaled so outputs are of unit size; the kernels accumulate in fp32 in another
order than the reference and round the output once, so they match within the tolerances of
``conftest_triton.TOLERANCES`` (absolute and relative: bf16 1.6e-2, fp16 2e-3, fp32 1e-4). The
dequantized weight is bit-exact on the GPU; the interpreter rounds fp32 to bf16 toward zero, so
there a bf16 weight is within one bf16 step.
"""

import os

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from conftest_triton import (  # noqa: E402
    DEVICE,
    INTERPRET,
    LLAMA3_8B_LINEARS,
    assert_close,
    make_generator,
    needs_gpu,
    needs_kernels,
    poison_allocator,
    randn,
)
from lmforge_torch_triton.ops import quant_reference, triton_awq  # noqa: E402
from lmforge_torch_triton.ops.triton_quant_common import (  # noqa: E402
    MatmulConfig,
    split_k_workspace,
)


def make_awq(k, n, group, dtype, gen):
    """Random AutoAWQ tensors whose dequantized weight has entries of size ~1/sqrt(K)."""
    q = torch.randint(0, 16, (k, n), generator=gen, device=gen.device, dtype=torch.int32)
    z = torch.randint(0, 16, (k // group, n), generator=gen, device=gen.device,
                      dtype=torch.int32)
    scales = (torch.rand(k // group, n, generator=gen, device=gen.device) + 0.5) / (6 * k**0.5)
    return quant_reference.awq_pack(q), quant_reference.awq_pack(z), scales.to(dtype)


def check(m, k, n, group, dtype, config=None, with_bias=False, silu=False, seed=0):
    gen = make_generator(seed)
    qweight, qzeros, scales = make_awq(k, n, group, dtype, gen)
    x = randn((m, 2 * k if silu else k), dtype, gen)
    bias = 0.1 * randn((n,), dtype, gen) if with_bias else None
    reference = quant_reference.awq_silu_mul_linear if silu else quant_reference.awq_linear
    expected = reference(x, qweight, qzeros, scales, group, bias)
    poison_allocator(((m, n), dtype))
    if config is not None:
        y = triton_awq.launch(x, qweight, qzeros, scales, group, bias, config, silu_mul=silu)
    elif silu:
        y = triton_awq.awq_silu_mul_linear(x, qweight, qzeros, scales, group, bias)
    else:
        y = triton_awq.awq_linear(x, qweight, qzeros, scales, group, bias)
    assert y.dtype == dtype and y.shape == (m, n)
    assert_close(y, expected)
    return y


# The one-row loop and tl.dot tiles (scaled after the product, and at 64 rows before it),
# each alone on its tile and with K split over programs (small blocks, so the small shapes take
# several K steps, groups and column tiles).
INTERPRET_CONFIGS = {
    "row": MatmulConfig(1, 32, 16, 1, 4, 1),
    "row_split": MatmulConfig(1, 64, 32, 3, 4, 1),
    "dot": MatmulConfig(16, 16, 32, 1, 4, 2),
    "dot_split": MatmulConfig(16, 32, 16, 2, 4, 1),
    "dot_64_rows": MatmulConfig(64, 16, 32, 2, 4, 1),
}
# (M, K, N, group): N a multiple of the blocks; N and M ragged against them.
INTERPRET_SHAPES = [(1, 128, 64, 32), (3, 192, 40, 64)]


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", INTERPRET_SHAPES, ids=str)
@pytest.mark.parametrize("config", INTERPRET_CONFIGS, ids=str)
def test_kernel_matches_reference(dtype, shape, config):
    check(*shape, dtype, INTERPRET_CONFIGS[config], with_bias=shape[0] == 3)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("config", ["row_split", "dot"], ids=str)
def test_fused_silu_mul_matches_reference(config):
    check(2, 64, 48, 32, torch.float16, INTERPRET_CONFIGS[config], silu=True)


@pytest.mark.triton_interpret
@needs_kernels
def test_one_group_per_column():
    """group_size = K (per-channel scales): the blocks are the largest power of two dividing K."""
    check(2, 96, 32, 96, torch.float16, MatmulConfig(16, 16, 64, 2, 4, 1))


@pytest.mark.triton_interpret
@needs_kernels
def test_split_k_leaves_its_workspace_zero():
    y1 = check(1, 128, 64, 32, torch.float32, INTERPRET_CONFIGS["row_split"])
    whole, _ = split_k_workspace(torch.device(DEVICE), 1 << 20, 0)
    assert not whole.any()
    y2 = check(1, 128, 64, 32, torch.float32, INTERPRET_CONFIGS["row_split"])
    assert torch.equal(y1, y2)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_dequantize_matches_reference(dtype):
    gen = make_generator(3)
    qweight, qzeros, scales = make_awq(128, 72, 32, dtype, gen)
    w = triton_awq.awq_dequantize(qweight, qzeros, scales, 32)
    expected = quant_reference.awq_dequantize(qweight, qzeros, scales, 32)
    assert w.dtype == dtype and w.shape == (128, 72)
    if INTERPRET and dtype == torch.bfloat16:
        torch.testing.assert_close(w, expected, atol=0, rtol=2**-7)
    else:
        assert torch.equal(w, expected)


@pytest.mark.triton_interpret
@needs_kernels
def test_ops_pick_the_kernel_or_dequantize(monkeypatch):
    check(1, 128, 64, 32, torch.float16, with_bias=True)  # the tables' one-row config
    check(3, 128, 64, 32, torch.float16)  # the 16-row bucket
    monkeypatch.setattr(triton_awq, "DEQUANT_MIN_ROWS", 2)
    check(3, 128, 64, 32, torch.float16, with_bias=True)  # dequantize, then a 16-bit matmul


@pytest.mark.triton_interpret
@needs_kernels
def test_silu_mul_op_fuses_where_the_table_says(monkeypatch):
    check(1, 64, 48, 32, torch.float16, silu=True)  # not in FUSED_CONFIGS: two kernels
    monkeypatch.setitem(triton_awq.FUSED_CONFIGS, (1, "narrow"), INTERPRET_CONFIGS["row"])
    check(1, 64, 48, 32, torch.float16, silu=True)


@pytest.mark.triton_interpret
@needs_kernels
def test_a_corrupted_weight_fails_the_comparison():
    gen = make_generator(4)
    qweight, qzeros, scales = make_awq(64, 32, 32, torch.float32, gen)
    x = randn((1, 64), torch.float32, gen)
    y = triton_awq.launch(x, qweight, qzeros, scales, 32, None, INTERPRET_CONFIGS["row"])
    bad = qweight.clone()
    bad[5, 1] ^= 0x00F00000  # one nibble of one word
    with pytest.raises(AssertionError):
        assert_close(y, quant_reference.awq_linear(x, bad, qzeros, scales, 32))


@pytest.mark.triton_interpret
@needs_kernels
def test_rejects_inconsistent_tensors():
    gen = make_generator(5)
    qweight, qzeros, scales = make_awq(64, 32, 32, torch.float16, gen)
    x = randn((1, 64), torch.float16, gen)
    with pytest.raises(ValueError, match="group_size 48 must divide K=64"):
        triton_awq.awq_linear(x, qweight, qzeros, scales, 48)
    with pytest.raises(ValueError, match="qzeros must be int32"):
        triton_awq.awq_linear(x, qweight, qzeros[:1], scales, 32)
    with pytest.raises(ValueError, match="K=32"):
        triton_awq.awq_linear(x[:, :32], qweight, qzeros, scales, 32)




@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("m", [1, 16, 32, 64, 256, 512])
@pytest.mark.parametrize("name", LLAMA3_8B_LINEARS, ids=str)
def test_llama3_shapes_bf16(name, m):
    check(m, *LLAMA3_8B_LINEARS[name], 128, torch.bfloat16, with_bias=name == "qkv", seed=m)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("m", [1, 64])
@pytest.mark.parametrize("name", ["qkv", "down"], ids=str)
def test_llama3_shapes_fp16(name, m):
    check(m, *LLAMA3_8B_LINEARS[name], 128, torch.float16, seed=m + 1)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("group", [32, 64])
def test_llama3_smaller_groups(group):
    check(1, *LLAMA3_8B_LINEARS["o"], group, torch.bfloat16)
    check(64, *LLAMA3_8B_LINEARS["o"], group, torch.bfloat16)


@pytest.mark.gpu
@needs_gpu
def test_llama3_prefill_dequantizes_exactly():
    k, n = LLAMA3_8B_LINEARS["gate_up"]
    gen = make_generator(6)
    qweight, qzeros, scales = make_awq(k, n, 128, torch.bfloat16, gen)
    poison_allocator(((k, n), torch.bfloat16))
    w = triton_awq.awq_dequantize(qweight, qzeros, scales, 128)
    assert torch.equal(w, quant_reference.awq_dequantize(qweight, qzeros, scales, 128))
    check(8192, k, n, 128, torch.bfloat16, seed=7)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("m", [1, 16])
def test_llama3_down_with_silu_mul(m):
    k, n = LLAMA3_8B_LINEARS["down"]
    check(m, k, n, 128, torch.bfloat16, silu=True, seed=8)
