"""The W4A16 GEMV on the K-major repack against the PyTorch dequantize-then-matmul reference.

Tolerances as in ``test_triton_awq.py`` (``conftest_triton.TOLERANCES``): the kernel applies the
scales to fp32 group sums where the reference rounds each dequantized weight to the activation
dtype, and rounds the output once.
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
from lmforge_torch_triton.ops.triton_awq_gemv import GemvConfig  # noqa: E402
from lmforge_torch_triton.ops.triton_quant_common import split_k_workspace  # noqa: E402
from test_triton_awq import make_awq  # noqa: E402


def check(m, k, n, group, dtype, config, with_bias=False, zeros=None, seed=0):
    gen = make_generator(seed)
    qweight, qzeros, scales = make_awq(k, n, group, dtype, gen)
    if zeros is not None:
        qzeros = torch.full_like(qzeros, zeros * 0x11111111 - (2**32 if zeros > 7 else 0))
    x = randn((m, k), dtype, gen)
    bias = 0.1 * randn((n,), dtype, gen) if with_bias else None
    expected = quant_reference.awq_linear(x, qweight, qzeros, scales, group, bias)
    poison_allocator(((m, n), dtype))
    y = triton_awq_gemv.launch(x, triton_awq_gemv.repack(qweight, group), qzeros, scales, group,
                               bias, config)
    assert y.dtype == dtype and y.shape == (m, n)
    assert not y.isnan().any()
    assert_close(y, expected)
    return y


ONE_TILE = GemvConfig(block_n=64, split_k=1, num_warps=4, prefetch=False)
SPLIT = GemvConfig(block_n=16, split_k=3, num_warps=4, prefetch=True)
RAGGED = GemvConfig(block_n=32, split_k=2, num_warps=4, prefetch=True)  # N = 48: a partial tile


def test_repack_puts_nibble_j_of_word_c_at_position_j_times_c_words_plus_c(monkeypatch):
    gen = make_generator(1)
    k, n, group = 64, 16, 32  # blocks of 32 positions: 4 words per block
    q = torch.randint(0, 16, (k, n), generator=gen, dtype=torch.int32)
    words = triton_awq_gemv.repack(quant_reference.awq_pack(q), group)
    assert words.shape == (n, k // 8) and words.dtype == torch.int32
    for col, word, nibble in [(0, 0, 0), (3, 1, 7), (15, 7, 5), (9, 6, 2)]:
        block, c = divmod(word, 4)
        pos = 32 * block + nibble * 4 + c
        assert (int(words[col, word]) >> (4 * nibble)) & 0xF == int(q[pos, col])
    monkeypatch.setattr(triton_awq_gemv, "REPACK_COLUMNS", 8)  # two chunks of columns
    assert torch.equal(triton_awq_gemv.repack(quant_reference.awq_pack(q), group), words)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("m", [1, 2, 3, 8])
@pytest.mark.parametrize("config", [ONE_TILE, SPLIT, RAGGED], ids=["one_tile", "split",
                                                                    "ragged"])
def test_kernel_matches_reference(dtype, m, config):
    # 1 and 2 rows correct each row's sums per block; from DEQUANT_ROWS on, the weights are
    # dequantized once for every row.
    check(m, 256, 48, 128, dtype, config, with_bias=m == 3)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("m", [4, 5, 6, 7])
def test_every_row_count_up_to_eight(m):
    assert (m >= triton_awq_gemv.DEQUANT_ROWS) == (m >= 3)
    check(m, 128, 40, 64, torch.bfloat16, RAGGED, seed=m)  # N = 40: a partial tile


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("m", [2, 6])
@pytest.mark.parametrize("group", [8, 16, 32, 64, 96])
def test_group_sizes(group, m):
    # 8 and 16 give blocks of one and two words a column, under a thread's 16 bytes.
    check(m, 192, 32, group, torch.float16, SPLIT, seed=group)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("zero", [0, 15])
def test_zero_points_at_the_extremes(zero):
    check(1, 128, 32, 32, torch.bfloat16, SPLIT, zeros=zero)


@pytest.mark.triton_interpret
@needs_kernels
def test_split_k_leaves_its_workspace_zero():
    y1 = check(2, 128, 32, 32, torch.float32, SPLIT)
    whole, _ = split_k_workspace(y1.device, 1 << 20, 0)
    assert not whole.any()
    assert torch.equal(y1, check(2, 128, 32, 32, torch.float32, SPLIT))


@pytest.mark.triton_interpret
@needs_kernels
def test_a_corrupted_weight_fails_the_comparison():
    gen = make_generator(4)
    qweight, qzeros, scales = make_awq(64, 32, 32, torch.float32, gen)
    x = randn((1, 64), torch.float32, gen)
    y = triton_awq_gemv.launch(x, triton_awq_gemv.repack(qweight, 32), qzeros, scales, 32, None,
                               ONE_TILE)
    bad = qweight.clone()
    bad[5, 1] ^= 0x00F00000  # one nibble of one word
    with pytest.raises(AssertionError):
        assert_close(y, quant_reference.awq_linear(x, bad, qzeros, scales, 32))


@pytest.mark.triton_interpret
@needs_kernels
def test_ops_route_repacked_weights_where_the_table_says(monkeypatch):
    gen = make_generator(6)
    qweight, qzeros, scales = make_awq(128, 32, 32, torch.float16, gen)
    w = AWQLinear(qweight, qzeros, scales, 32)
    x = randn((2, 128), torch.float16, gen)
    expected = quant_reference.awq_linear(x, qweight, qzeros, scales, 32)
    monkeypatch.setattr(triton_awq_gemv, "CONFIGS", {})
    monkeypatch.setattr(triton_awq_tc, "CONFIGS", {})
    assert triton_awq_gemv.with_gemv_layout(w) is w  # empty tables: nothing to repack for
    monkeypatch.setitem(triton_awq_gemv.CONFIGS, (2, "narrow"), SPLIT)
    repacked = triton_awq_gemv.with_gemv_layout(w)
    assert repacked.kind == "awq" and repacked.qweight_nk.shape == (32, 16)
    wide = AWQLinear(*make_awq(32, 16392, 32, torch.float16, gen), 32)
    assert triton_awq_gemv.with_gemv_layout(wide) is wide  # a shape class it does not run
    launches, launch = [], triton_awq_gemv.launch
    monkeypatch.setattr(triton_awq_gemv, "launch", lambda *a: launches.append(a) or launch(*a))
    assert_close(triton_awq.linear_awq(x, repacked), expected)
    gate_up = randn((2, 256), torch.float16, gen)
    assert_close(triton_awq.silu_mul_linear_awq(gate_up, repacked),
                 quant_reference.awq_silu_mul_linear(gate_up, qweight, qzeros, scales, 32))
    assert len(launches) == 2
    assert_close(triton_awq.linear_awq(x[:1], repacked), expected[:1])  # bucket 1: no entry
    assert len(launches) == 2


@pytest.mark.triton_interpret
@needs_kernels
def test_rejects_more_rows_than_it_takes():
    gen = make_generator(5)
    qweight, qzeros, scales = make_awq(64, 32, 32, torch.float16, gen)
    x = randn((9, 64), torch.float16, gen)
    with pytest.raises(ValueError, match="1 to 8 rows"):
        triton_awq_gemv.launch(x, triton_awq_gemv.repack(qweight, 32), qzeros, scales, 32, None,
                               ONE_TILE)


LLAMA_CONFIG = GemvConfig(block_n=256, split_k=8, num_warps=4, prefetch=True)
LLAMA_ROWS_CONFIG = GemvConfig(block_n=64, split_k=4, num_warps=4, prefetch=True)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("m", [1, 2, 4, 8])
@pytest.mark.parametrize("name", LLAMA3_8B_LINEARS, ids=str)
def test_llama3_shapes_bf16(name, m):
    check(m, *LLAMA3_8B_LINEARS[name], 128, torch.bfloat16,
          LLAMA_CONFIG if m == 1 else LLAMA_ROWS_CONFIG, with_bias=name == "qkv", seed=m)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", ["qkv", "down"], ids=str)
def test_llama3_shapes_fp16(name):
    check(1, *LLAMA3_8B_LINEARS[name], 128, torch.float16, LLAMA_CONFIG, seed=11)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("group", [32, 64])
def test_llama3_smaller_groups(group):
    check(1, *LLAMA3_8B_LINEARS["o"], group, torch.bfloat16, LLAMA_CONFIG)


@pytest.mark.gpu
@needs_gpu
def test_loading_repacks_where_the_table_runs_the_kernel(monkeypatch):
    from lmforge_torch_triton.models.weights import _placed

    k, n = LLAMA3_8B_LINEARS["qkv"]
    gen = make_generator(12)
    qweight, qzeros, scales = make_awq(k, n, 128, torch.bfloat16, gen)
    w = AWQLinear(qweight, qzeros, scales, 128)
    monkeypatch.setattr(triton_awq_gemv, "CONFIGS", {})
    monkeypatch.setattr(triton_awq_tc, "CONFIGS", {})
    assert getattr(_placed(w, torch.device("cuda"), torch.bfloat16), "qweight_nk", None) is None
    monkeypatch.setitem(triton_awq_gemv.CONFIGS, (1, "narrow"), LLAMA_CONFIG)
    placed = _placed(w, torch.device("cuda"), torch.bfloat16)
    assert placed.qweight_nk.shape == (n, k // 8)
    x = randn((1, k), torch.bfloat16, gen)
    assert_close(triton_awq.linear_awq(x, placed),
                 quant_reference.awq_linear(x, qweight, qzeros, scales, 128))
