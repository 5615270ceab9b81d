"""The W4A16 tensor-core matmul on the K-major repack against the PyTorch dequantize-then-matmul
reference.

Tolerances as in ``test_triton_awq.py`` (``conftest_triton.TOLERANCES``): the kernel
dequantizes each weight exactly as the reference does, and sums in fp32 in another order.
"""

import os

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from conftest_triton import (  # noqa: E402
    LLAMA3_8B_LINEARS,
    assert_close,
    make_generator,
    needs_gpu,
    needs_kernels,
    poison_allocator,
    randn,
)
from lmforge.model.linear import AWQLinear  # noqa: E402
from lmforge_torch_triton.ops import (  # noqa: E402
    quant_reference,
    triton_awq,
    triton_awq_gemv,
    triton_awq_tc,
)
from lmforge_torch_triton.ops.triton_awq_tc import TcConfig  # noqa: E402
from lmforge_torch_triton.ops.triton_quant_common import split_k_workspace  # noqa: E402
from test_triton_awq import make_awq  # noqa: E402


def check(m, k, n, group, dtype, config, with_bias=False, seed=0):
    gen = make_generator(seed)
    qweight, qzeros, scales = make_awq(k, n, group, dtype, gen)
    x = randn((m, k), dtype, gen)
    bias = 0.1 * randn((n,), dtype, gen) if with_bias else None
    expected = quant_reference.awq_linear(x, qweight, qzeros, scales, group, bias)
    poison_allocator(((m, n), dtype))
    y = triton_awq_tc.launch(x, triton_awq_gemv.repack(qweight, group), qzeros, scales, group,
                             bias, config)
    assert y.dtype == dtype and y.shape == (m, n)
    assert_close(y, expected)
    return y


# block_n, block_m, block_k, split_k, num_warps, num_stages
ONE_TILE = TcConfig(64, 16, 128, 1, 4, 2)
SPLIT = TcConfig(32, 16, 64, 3, 4, 2)  # half-block K steps, three slices
WIDE = TcConfig(128, 32, 128, 2, 4, 3)  # two row tiles at 40 rows, a partial column tile


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("m", [8, 16, 21])
@pytest.mark.parametrize("config", [ONE_TILE, SPLIT], ids=["one_tile", "split"])
def test_kernel_matches_reference(dtype, m, config):
    check(m, 256, 64, 128, dtype, config, with_bias=m == 21, seed=m)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("m,n", [(40, 160), (33, 48), (64, 128)])
def test_ragged_rows_and_columns(m, n):
    check(m, 256, n, 128, torch.bfloat16, WIDE, with_bias=True, seed=n)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("group", [16, 32, 64, 128])
@pytest.mark.parametrize("config", [ONE_TILE, SPLIT], ids=["one_tile", "split"])
def test_group_sizes(group, config):
    # K blocks of 16 and 32 positions give one and two MMA steps a block, under a run of 8.
    check(24, 256, 64, group, torch.float16, config, seed=group)


@pytest.mark.triton_interpret
@needs_kernels
def test_split_k_leaves_its_workspace_zero():
    y1 = check(20, 256, 32, 64, torch.bfloat16, SPLIT)
    whole, _ = split_k_workspace(y1.device, 1 << 20, 0)
    assert not whole.any()
    assert torch.equal(y1, check(20, 256, 32, 64, torch.bfloat16, SPLIT))


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("where", [(5, 1, 0x00F00000), (200, 7, 0x0000000F)])
def test_a_corrupted_weight_fails_the_comparison(where):
    gen = make_generator(4)
    qweight, qzeros, scales = make_awq(256, 64, 128, torch.float16, gen)
    x = randn((16, 256), torch.float16, gen)
    y = triton_awq_tc.launch(x, triton_awq_gemv.repack(qweight, 128), qzeros, scales, 128, None,
                             ONE_TILE)
    assert_close(y, quant_reference.awq_linear(x, qweight, qzeros, scales, 128))
    row, word, bits = where
    bad = qweight.clone()
    bad[row, word] ^= bits  # one nibble of one word
    with pytest.raises(AssertionError):
        assert_close(y, quant_reference.awq_linear(x, bad, qzeros, scales, 128))


@pytest.mark.triton_interpret
@needs_kernels
def test_rejects_what_it_does_not_take():
    gen = make_generator(5)
    qweight, qzeros, scales = make_awq(64, 32, 32, torch.float16, gen)
    nk = triton_awq_gemv.repack(qweight, 32)
    with pytest.raises(ValueError, match="1 to 255 rows"):
        triton_awq_tc.launch(randn((256, 64), torch.float16, gen), nk, qzeros, scales, 32, None,
                             ONE_TILE)
    with pytest.raises(ValueError, match="fp16 or bf16"):
        triton_awq_tc.launch(randn((16, 64), torch.float32, gen), nk, qzeros, scales, 32, None,
                             ONE_TILE)


@pytest.mark.triton_interpret
@needs_kernels
def test_ops_route_repacked_weights_where_the_table_says(monkeypatch):
    gen = make_generator(6)
    qweight, qzeros, scales = make_awq(128, 32, 32, torch.float16, gen)
    w = AWQLinear(qweight, qzeros, scales, 32)
    x = randn((16, 128), torch.float16, gen)
    expected = quant_reference.awq_linear(x, qweight, qzeros, scales, 32)
    monkeypatch.setattr(triton_awq_gemv, "CONFIGS", {})
    monkeypatch.setattr(triton_awq_tc, "CONFIGS", {})
    assert triton_awq_gemv.with_gemv_layout(w) is w  # empty tables: nothing to repack for
    monkeypatch.setitem(triton_awq_tc.CONFIGS, (16, "narrow"), ONE_TILE)
    repacked = triton_awq_gemv.with_gemv_layout(w)  # the tensor-core table alone repacks
    assert repacked.qweight_nk.shape == (32, 16)
    launches, launch = [], triton_awq_tc.launch
    monkeypatch.setattr(triton_awq_tc, "launch", lambda *a: launches.append(a) or launch(*a))
    assert_close(triton_awq.linear_awq(x, repacked), expected)
    gate_up = randn((16, 256), torch.float16, gen)
    assert_close(triton_awq.silu_mul_linear_awq(gate_up, repacked),
                 quant_reference.awq_silu_mul_linear(gate_up, qweight, qzeros, scales, 32))
    assert len(launches) == 2
    assert_close(triton_awq.linear_awq(x[:1].float(), repacked).half(), expected[:1])
    assert_close(triton_awq.linear_awq(x.repeat(2, 1), repacked), expected.repeat(2, 1))
    assert len(launches) == 2  # fp32 rows, and bucket 32: no entry


LLAMA_CONFIGS = [TcConfig(128, 16, 128, 4, 4, 4), TcConfig(64, 64, 128, 2, 4, 3),
                 TcConfig(128, 128, 64, 1, 8, 3)]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("m", [8, 16, 64, 255])
@pytest.mark.parametrize("name", LLAMA3_8B_LINEARS, ids=str)
def test_llama3_shapes_bf16(name, m):
    for config in LLAMA_CONFIGS:
        check(m, *LLAMA3_8B_LINEARS[name], 128, torch.bfloat16, config,
              with_bias=name == "qkv", seed=m)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", ["qkv", "down"], ids=str)
def test_llama3_shapes_fp16(name):
    check(48, *LLAMA3_8B_LINEARS[name], 128, torch.float16, LLAMA_CONFIGS[1], seed=11)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("group", [32, 64])
def test_llama3_smaller_groups(group):
    check(32, *LLAMA3_8B_LINEARS["o"], group, torch.bfloat16, LLAMA_CONFIGS[0])
