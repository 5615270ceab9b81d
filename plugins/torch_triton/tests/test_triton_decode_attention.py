"""Triton paged decode attention against the PyTorch reference: GQA groups, split-K on and
off, ragged lengths over shuffled blocks, sliding windows, int8 and int4 caches."""

import os
import random

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from conftest_triton import (  # noqa: E402
    DTYPES,
    QUANT_DTYPES,
    QUANT_SPREAD,
    assert_close,
    make_generator,
    make_paged_kv,
    needs_gpu,
    needs_kernels,
    randn,
)
from lmforge_torch_triton.ops import reference  # noqa: E402
from lmforge_torch_triton.ops import triton_decode_attention as decode  # noqa: E402
from lmforge_torch_triton.ops.decode_launch import (  # noqa: E402
    CODE_VARIANTS,
    KernelConfig,
    choose_launch,
    choose_num_splits,
    kernel_config,
)
from lmforge_torch_triton.ops.triton_decode_attention import (  # noqa: E402
    paged_decode_attention,
    paged_decode_attention_splitk,
)

# Every way of reading a quantized cache's codes, by its index in CODE_VARIANTS.
VARIANTS = pytest.mark.parametrize("variant", range(len(CODE_VARIANTS)),
                                   ids=lambda i: CODE_VARIANTS[i])


def check_decode(kv_lens, num_heads, num_kv_heads, head_dim, block_size, dtype, num_splits, window,
                 policy=0, softcap=None, q_spread=1.0, block_n=None, variant=None):
    gen = make_generator(len(kv_lens) * 1000 + num_kv_heads * 10 + block_size)
    kv = make_paged_kv(kv_lens, num_kv_heads, head_dim, block_size, dtype, gen,
                       quant_policy=policy)
    q = randn((len(kv_lens), num_heads, head_dim), dtype, gen) * q_spread
    scale = head_dim**-0.5
    args = (q, kv.k_cache, kv.v_cache, kv.block_tables, kv.kv_lens, scale, window)
    extra = {**kv.quant, **({"softcap": softcap} if softcap else {})}
    if num_splits is None:
        assert variant is None, "the default launch picks its own variant"
        out = paged_decode_attention(*args, **extra)
    else:
        out = paged_decode_attention_splitk(*args, num_splits, block_n=block_n, variant=variant,
                                            **extra)
    assert out.shape == q.shape and out.dtype == dtype
    spread = QUANT_SPREAD if policy else 1.0
    assert_close(out, reference.paged_decode_attention(*args, **extra), spread)


# (num_kv_heads for 8 query heads: GQA ratio 1/4/8, block size, splits, sliding window).
# Block 16 exercises key tiles that span several cache blocks, 64 and 128 tiles inside one
# block; each sequence spreads its own tiles over the splits, and splits past its tiles idle.
SMALL_CASES = [
    (8, 16, 1, None),
    (2, 16, 3, None),
    (1, 64, 2, None),
    (2, 128, 1, None),
    (2, 32, 1, 40),
    (1, 16, 4, 70),
    (8, 64, None, None),
    (2, 16, 33, None),  # a graph-sized split count: most splits of these short sequences idle
]


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("num_kv_heads,block_size,num_splits,window", SMALL_CASES)
def test_decode_matches_reference(dtype, num_kv_heads, block_size, num_splits, window):
    # Lengths: a lone token, mid-block ends, an exact block multiple, several blocks.
    check_decode([1, 37, 64, 150], 8, num_kv_heads, 32, block_size, dtype, num_splits, window)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("num_splits,window,policy", [(1, None, 0), (3, 40, 0), (2, None, 8)])
def test_softcapped_decode_matches_reference(dtype, num_splits, window, policy):
    """Gemma 2's cap * tanh(score / cap), with scores spread well past the cap."""
    check_decode([1, 37, 150], 8, 2, 32, 16, dtype, num_splits, window, policy, softcap=2.0,
                 q_spread=4.0)


@pytest.mark.triton_interpret
@needs_kernels
def test_decode_head_dim_not_power_of_two():
    check_decode([9, 70], 4, 2, 80, 16, torch.float32, 2, None)


# A quantized cache (int8, int4) through the same cases: GQA, splits, windows, ragged lengths.
QUANT_CASES = [(2, 16, 3, None), (1, 64, 1, None), (2, 32, 2, 40), (8, 16, None, None)]


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("policy", [8, 4])
@pytest.mark.parametrize("dtype", QUANT_DTYPES, ids=str)
@pytest.mark.parametrize("num_kv_heads,block_size,num_splits,window", QUANT_CASES)
def test_quantized_decode_matches_reference(policy, dtype, num_kv_heads, block_size, num_splits,
                                            window):
    check_decode([1, 37, 64, 150], 8, num_kv_heads, 32, block_size, dtype, num_splits, window,
                 policy)


@pytest.mark.triton_interpret
@needs_kernels
@VARIANTS
@pytest.mark.parametrize("policy", [8, 4])
@pytest.mark.parametrize("dtype", QUANT_DTYPES, ids=str)
@pytest.mark.parametrize("num_kv_heads,num_splits", [(2, 3), (8, 1)])
def test_code_variants_match_reference(variant, policy, dtype, num_kv_heads, num_splits):
    check_decode([1, 37, 150], 8, num_kv_heads, 32, 16, dtype, num_splits, None, policy,
                 variant=variant)


@pytest.mark.triton_interpret
@needs_kernels
@VARIANTS
@pytest.mark.parametrize("policy", [0, 8, 4])
@pytest.mark.parametrize("block_n", [16, 64, 128])
@pytest.mark.parametrize("block_size,num_splits,window", [(16, 3, None), (64, 1, 40)])
def test_decode_tile_sizes(variant, policy, block_n, block_size, num_splits, window):
    # Every tile size against both cache layouts: tiles inside one block and across several.
    if variant and not policy:
        pytest.skip("an unquantized cache has one way to read it")
    dtype = torch.bfloat16 if policy else torch.float32
    check_decode([1, 37, 64, 150], 8, 2, 32, block_size, dtype, num_splits, window, policy,
                 block_n=block_n, variant=variant)


@pytest.mark.triton_interpret
@needs_kernels
@VARIANTS
@pytest.mark.parametrize("policy", [8, 4])
@pytest.mark.parametrize("num_splits,block_n", [(1, 64), (2, 64), (1, 128)])
def test_quantized_decode_never_reads_past_the_context(variant, policy, num_splits, block_n):
    # NaN codes, scales and zeros in every slot past each sequence's length (the tail of its
    # last block, the padding block and the spare ones) must not reach the output.
    gen = make_generator(policy + num_splits)
    kv_lens = [5, 64, 100]
    kv = make_paged_kv(kv_lens, 2, 32, 64, torch.bfloat16, gen, quant_policy=policy)
    q = randn((3, 8, 32), torch.bfloat16, gen)
    args = (q, kv.k_cache, kv.v_cache, kv.block_tables, kv.kv_lens, 32**-0.5, None)
    expected = reference.paged_decode_attention(*args, **kv.quant)
    live = torch.zeros(kv.k_cache.shape[:2], dtype=torch.bool, device=q.device)
    for b, n in enumerate(kv_lens):
        for pos in range(n):
            live[kv.block_tables[b, pos // 64], pos % 64] = True
    for t in (kv.k_cache, kv.v_cache):
        t[~live] = 0xFF
    for t in (kv.quant["k_scales_zeros"], kv.quant["v_scales_zeros"]):
        t[~live] = float("nan")
    # A register cap only changes the compiled code; the interpreter takes it and ignores it.
    out = paged_decode_attention_splitk(*args, num_splits, block_n=block_n, variant=variant,
                                        max_registers=128, **kv.quant)
    assert_close(out, expected, QUANT_SPREAD)


@pytest.mark.triton_interpret
@needs_kernels
@VARIANTS
@pytest.mark.parametrize("policy", [8, 4])
def test_quantized_decode_head_dim_not_power_of_two(variant, policy):
    check_decode([9, 70], 4, 2, 80, 16, torch.float32, 2, None, policy, variant=variant)


@pytest.mark.triton_interpret
@needs_kernels
def test_decode_rejects_mismatched_heads():
    gen = make_generator()
    kv = make_paged_kv([4], 3, 32, 16, torch.float32, gen)
    q = randn((1, 8, 32), torch.float32, gen)
    with pytest.raises(ValueError, match="multiple of K/V heads"):
        paged_decode_attention(q, kv.k_cache, kv.v_cache, kv.block_tables, kv.kv_lens, 1.0)


def test_choose_num_splits_fills_the_gpu_for_small_batches_only():
    cpu = torch.device("cpu")  # stands in for a 132-SM H100
    assert choose_num_splits(1, 8, 4096, cpu) == 16  # at most 16
    assert choose_num_splits(16, 8, 65536, cpu) == 5  # 4 x 132 programs
    assert choose_num_splits(33, 8, 4096, cpu) == 1  # 2 x 132 programs without splits
    assert choose_num_splits(64, 8, 4096, cpu) == 1
    assert choose_num_splits(1, 8, 100, cpu) == 2  # no more splits than 64-token tiles


# Llama-3-8B: 32 query heads, head_dim 128, block 64; GQA ratios 1 / 4 / 8.
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("num_kv_heads", [32, 8, 4])
@pytest.mark.parametrize(
    "batch,max_len,num_splits,window",
    [
        (64, 4096, None, None),
        (64, 4096, 1, None),
        (4, 4096, 16, None),
        (16, 4096, None, 1000),
        (3, 333, 5, None),
    ],
)
def test_decode_matches_reference_llama3_shapes(
    dtype, num_kv_heads, batch, max_len, num_splits, window
):
    rng = random.Random(batch * max_len)
    kv_lens = [max_len] + [rng.randint(1, max_len) for _ in range(batch - 1)]
    check_decode(kv_lens, 32, num_kv_heads, 128, 64, dtype, num_splits, window)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("policy", [8, 4])
@pytest.mark.parametrize("num_kv_heads", [8, 4])
@pytest.mark.parametrize(
    "batch,max_len,num_splits,window",
    [(64, 4096, None, None), (4, 4096, 16, None), (16, 4096, None, 1000), (3, 333, 5, None)],
)
def test_quantized_decode_llama3_shapes(policy, num_kv_heads, batch, max_len, num_splits, window):
    rng = random.Random(batch * max_len + policy)
    kv_lens = [max_len] + [rng.randint(1, max_len) for _ in range(batch - 1)]
    check_decode(kv_lens, 32, num_kv_heads, 128, 64, torch.bfloat16, num_splits, window, policy)


@pytest.mark.gpu
@needs_gpu
@VARIANTS
@pytest.mark.parametrize("policy", [8, 4])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("num_splits,block_n,warps", [(1, 64, 2), (1, 128, 8), (16, 128, 4)])
def test_code_variants_llama3_shapes(variant, policy, dtype, num_splits, block_n, warps):
    """Each variant compiled for the GPU at the launch configs the benchmark sweeps."""
    rng = random.Random(policy + num_splits)
    kv_lens = [2048] + [rng.randint(1, 2048) for _ in range(15)]
    gen = make_generator(variant + policy)
    kv = make_paged_kv(kv_lens, 8, 128, 64, dtype, gen, quant_policy=policy)
    q = randn((len(kv_lens), 32, 128), dtype, gen)
    args = (q, kv.k_cache, kv.v_cache, kv.block_tables, kv.kv_lens, 128**-0.5, None)
    expected = reference.paged_decode_attention(*args, **kv.quant)
    for max_registers in (None, 128):
        out = paged_decode_attention_splitk(*args, num_splits, warps, block_n=block_n,
                                            variant=variant, max_registers=max_registers,
                                            **kv.quant)
        assert_close(out, expected, QUANT_SPREAD)


@pytest.mark.gpu
@needs_gpu
def test_decode_replays_in_a_cuda_graph():
    """Decode launches depend on shapes only (no host sync), so a captured step replays
    correctly when the lengths and tables change between replays."""
    gen = make_generator(7)
    kv = make_paged_kv([300, 1000, 4000, 77], 8, 128, 64, torch.bfloat16, gen)
    q = randn((4, 32, 128), torch.bfloat16, gen)
    args = (q, kv.k_cache, kv.v_cache, kv.block_tables, kv.kv_lens, 128**-0.5)
    paged_decode_attention(*args)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = paged_decode_attention(*args)
    for step in range(3):
        kv.kv_lens.add_(step)
        kv.block_tables.copy_(kv.block_tables.flip(0))
        kv.kv_lens.copy_(kv.kv_lens.flip(0))
        graph.replay()
        assert_close(out, reference.paged_decode_attention(*args))


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("num_splits", [1, 4])
def test_decode_head_dim_256(num_splits):
    check_decode([700, 77, 2000], 8, 4, 256, 64, torch.bfloat16, num_splits, None)


# Gemma-2-9B: 16 query heads, 8 K/V heads of 256, scores capped at 50, local layers' 4096 window.
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("window", [None, 4096])
@pytest.mark.parametrize("batch,max_len", [(1, 6000), (64, 2048)])
def test_softcapped_decode_gemma2_shapes(window, batch, max_len):
    rng = random.Random(batch)
    kv_lens = [max_len] + [rng.randint(1, max_len) for _ in range(batch - 1)]
    check_decode(kv_lens, 16, 8, 256, 64, torch.bfloat16, None, window, softcap=50.0,
                 q_spread=8.0)


def test_quantized_tiles_follow_the_split_count():
    """128-token tiles only where a quantized cache's sequences are split (small batches)."""
    cpu = torch.device("cpu")
    assert choose_launch(1, 8, 4096, cpu, quant_policy=8) == (16, 128)
    assert choose_launch(1, 8, 4096, cpu, quant_policy=0) == (16, 64)
    assert choose_launch(64, 8, 4096, cpu, quant_policy=4) == (1, 64)
    assert choose_launch(1, 8, 200, cpu, quant_policy=8) == (2, 128)  # two 128-token tiles


def test_default_kernel_configs_are_the_measured_ones():
    """Only measured configs are defaults: 64-token tiles, 2 warps unsplit and 4 split, 3 stages;
    a quantized cache split into 128-token word tiles, unsplit read as the sweep's winners
    (int8 as float16 pairs, int4 as bytes with 2 stages)."""
    assert kernel_config(0, 1) == KernelConfig(64, 2, 3, 0)
    assert kernel_config(0, 16) == KernelConfig(64, 4, 3, 0)
    assert kernel_config(8, 1) == KernelConfig(64, 2, 3, CODE_VARIANTS.index("f16pairs"))
    assert kernel_config(4, 1) == KernelConfig(64, 2, 2, CODE_VARIANTS.index("bytes"))
    for policy in (8, 4):
        assert kernel_config(policy, 2) == KernelConfig(128, 4, 3, 0)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("policy,kv_lens,block_size,num_kv_heads,num_splits,launch", [
    # launch: (splits, tokens per tile, warps, stages, variant, shared K/V row offsets); tables of
    # 320 tokens (four blocks of 64 and a padding one) split 5 ways over 64-token tiles, 3 over 128
    (0, [200], 64, 1, None, (5, 64, 4, 3, 0, False)),
    (0, [20] * 33, 64, 8, None, (1, 64, 2, 3, 0, False)),  # 264 programs: no splits
    (0, [20], 32, 1, 4, (1, 64, 2, 3, 0, False)),  # one tile: four splits run as one, at its warps
    (8, [200], 64, 1, None, (3, 128, 4, 3, 0, True)),
    (4, [20] * 33, 64, 8, None, (1, 64, 2, 2, 1, True)),  # int4 unsplit: bytes, 2 stages
])
def test_default_launches(monkeypatch, policy, kv_lens, block_size, num_kv_heads, num_splits,
                          launch):
    """What the op launches by default; the unquantized kernel keeps a K and a V lookup."""
    launches = []
    kernel = decode._decode_split_kernel

    class Recording:
        def __getitem__(self, grid):
            def run(*args, **meta):
                launches.append((grid[2], meta["BLOCK_N"], meta["num_warps"],
                                 meta["num_stages"], meta["VARIANT"], meta["SAME_KV_STRIDES"]))
                return kernel[grid](*args, **meta)
            return run

    monkeypatch.setattr(decode, "_decode_split_kernel", Recording())
    check_decode(kv_lens, 2 * num_kv_heads, num_kv_heads, 32, block_size, torch.float32,
                 num_splits, None, policy)
    assert launches == [launch]
