"""Triton paged prefill attention against the PyTorch reference: fresh prompts, prompts after a
cached prefix (chunked prefill, prefix-cache hits), GQA groups, sliding windows, int8 and int4
caches; the step's own tokens read from the cache or from their unquantized K/V."""

import os
import random

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from conftest_triton import (  # noqa: E402
    DEVICE,
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
from lmforge_torch_triton.ops.triton_prefill_attention import paged_prefill_attention  # noqa: E402


def poison_new_tokens(kv, q_lens, kv_lens):
    """NaN in the cache slots of each sequence's last ``q_len`` positions (its scales and zeros
    when quantized): attention given the step's own K/V must never read them."""
    block_size = kv.k_cache.shape[1]
    for b, (q_len, kv_len) in enumerate(zip(q_lens, kv_lens, strict=True)):
        for pos in range(kv_len - q_len, kv_len):
            block, row = int(kv.block_tables[b, pos // block_size]), pos % block_size
            if kv.quant:
                kv.quant["k_scales_zeros"][block, row] = float("nan")
                kv.quant["v_scales_zeros"][block, row] = float("nan")
            else:
                kv.k_cache[block, row] = float("nan")
                kv.v_cache[block, row] = float("nan")


def check_prefill(q_lens, kv_lens, num_heads, num_kv_heads, head_dim, block_size, dtype, window,
                  policy=0, softcap=None, q_spread=1.0, fresh=False):
    gen = make_generator(sum(kv_lens) + num_kv_heads * 10 + block_size)
    kv = make_paged_kv(kv_lens, num_kv_heads, head_dim, block_size, dtype, gen,
                       quant_policy=policy)
    q = randn((sum(q_lens), num_heads, head_dim), dtype, gen) * q_spread
    cu_q_lens = (
        torch.tensor([0, *q_lens], dtype=torch.int32).cumsum(0, dtype=torch.int32).to(DEVICE)
    )
    scale = head_dim**-0.5
    args = (q, kv.k_cache, kv.v_cache, kv.block_tables, cu_q_lens, kv.kv_lens, scale, window)
    extra = {**kv.quant, **({"softcap": softcap} if softcap else {})}
    if fresh:
        new_shape = (sum(q_lens), num_kv_heads, head_dim)
        extra.update(k_new=randn(new_shape, dtype, gen), v_new=randn(new_shape, dtype, gen))
        poison_new_tokens(kv, q_lens, kv_lens)
    out = paged_prefill_attention(*args, **extra)
    assert out.shape == q.shape and out.dtype == dtype
    spread = QUANT_SPREAD if policy else 1.0
    assert_close(out, reference.paged_prefill_attention(*args, **extra), spread)


# (num_kv_heads for 8 query heads, block size, q_lens, kv_lens, sliding window).
SMALL_CASES = [
    # Fresh prompts, one a single token.
    (8, 16, [5, 40, 1], [5, 40, 1], None),
    # New tokens after a cached prefix: 37 and 29 positions already in the cache.
    (2, 16, [5, 40, 1], [5, 77, 30], None),
    # Several query tiles, a prefix that ends mid-block, key tiles inside one cache block.
    (1, 64, [130, 3], [200, 3], None),
    # Sliding windows narrower than a key tile and across a prefix.
    (2, 16, [50, 7], [90, 7], 20),
    (1, 32, [17, 64], [17, 100], 33),
]


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("num_kv_heads,block_size,q_lens,kv_lens,window", SMALL_CASES)
def test_prefill_matches_reference(dtype, num_kv_heads, block_size, q_lens, kv_lens, window):
    check_prefill(q_lens, kv_lens, 8, num_kv_heads, 32, block_size, dtype, window)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case,policy", [(1, 0), (3, 0), (1, 8)])
def test_softcapped_prefill_matches_reference(dtype, case, policy):
    """Gemma 2's cap * tanh(score / cap), with scores spread well past the cap; over a cached
    prefix, and within a sliding window."""
    num_kv_heads, block_size, q_lens, kv_lens, window = SMALL_CASES[case]
    check_prefill(q_lens, kv_lens, 8, num_kv_heads, 32, block_size, dtype, window, policy,
                  softcap=2.0, q_spread=4.0)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("policy", [0, 8, 4])
@pytest.mark.parametrize("num_kv_heads,block_size,q_lens,kv_lens,window", SMALL_CASES)
def test_prefill_over_new_tokens_matches_reference(policy, num_kv_heads, block_size, q_lens,
                                                   kv_lens, window):
    """The step's own tokens from their unquantized K/V, only the prefix from the cache (whose
    slots for the new tokens hold NaN): fresh prompts, prompts after a prefix, windows."""
    dtype = torch.bfloat16 if policy else torch.float32
    check_prefill(q_lens, kv_lens, 8, num_kv_heads, 32, block_size, dtype, window, policy,
                  fresh=True)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("policy", [0, 8, 4])
def test_softcapped_prefill_over_new_tokens(policy):
    num_kv_heads, block_size, q_lens, kv_lens, window = SMALL_CASES[3]
    check_prefill(q_lens, kv_lens, 8, num_kv_heads, 32, block_size, torch.float32, window,
                  policy, softcap=2.0, q_spread=4.0, fresh=True)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("policy", [0, 8])
def test_prefill_over_new_tokens_head_dim_not_power_of_two(policy):
    check_prefill([9, 20], [30, 20], 4, 2, 80, 16, torch.float32, None, policy, fresh=True)


@pytest.mark.triton_interpret
@needs_kernels
def test_prefill_head_dim_not_power_of_two():
    check_prefill([9, 20], [30, 20], 4, 2, 80, 16, torch.float32, None)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("policy", [8, 4])
@pytest.mark.parametrize("dtype", QUANT_DTYPES, ids=str)
@pytest.mark.parametrize("num_kv_heads,block_size,q_lens,kv_lens,window",
                         [SMALL_CASES[1], SMALL_CASES[2], SMALL_CASES[3]])
def test_quantized_prefill_matches_reference(policy, dtype, num_kv_heads, block_size, q_lens,
                                             kv_lens, window):
    check_prefill(q_lens, kv_lens, 8, num_kv_heads, 32, block_size, dtype, window, policy)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("policy", [8, 4])
def test_quantized_prefill_head_dim_not_power_of_two(policy):
    check_prefill([9, 20], [30, 20], 4, 2, 80, 16, torch.float32, None, policy)


@pytest.mark.triton_interpret
@needs_kernels
def test_prefill_rejects_bad_cu_q_lens():
    gen = make_generator()
    kv = make_paged_kv([4, 4], 2, 32, 16, torch.float32, gen)
    q = randn((8, 4, 32), torch.float32, gen)
    cu_q_lens = torch.tensor([0, 8], dtype=torch.int32, device=DEVICE)
    with pytest.raises(ValueError, match="cu_q_lens"):
        paged_prefill_attention(
            q, kv.k_cache, kv.v_cache, kv.block_tables, cu_q_lens, kv.kv_lens, 1.0
        )


def llama3_batch(
    batch: int, max_prompt: int, max_prefix: int, seed: int
) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    q_lens = [max_prompt] + [rng.randint(1, max_prompt) for _ in range(batch - 1)]
    prefixes = [rng.randint(0, max_prefix) if max_prefix else 0 for _ in range(batch)]
    return q_lens, [q + p for q, p in zip(q_lens, prefixes, strict=True)]


# Llama-3-8B: 32 query heads, head_dim 128, block 64; GQA ratios 1 / 4 / 8; contexts to 4k.
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("num_kv_heads", [32, 8, 4])
@pytest.mark.parametrize(
    "batch,max_prompt,max_prefix,window",
    [
        (8, 1024, 0, None),
        (8, 512, 3072, None),
        (32, 128, 2048, None),
        (4, 2048, 2048, 1000),
    ],
)
def test_prefill_matches_reference_llama3_shapes(
    dtype, num_kv_heads, batch, max_prompt, max_prefix, window
):
    q_lens, kv_lens = llama3_batch(batch, max_prompt, max_prefix, seed=batch + max_prefix)
    check_prefill(q_lens, kv_lens, 32, num_kv_heads, 128, 64, dtype, window)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("policy", [8, 4])
@pytest.mark.parametrize(
    "batch,max_prompt,max_prefix,window",
    [(8, 1024, 0, None), (8, 512, 3072, None), (4, 2048, 2048, 1000)],
)
def test_quantized_prefill_llama3_shapes(policy, batch, max_prompt, max_prefix, window):
    q_lens, kv_lens = llama3_batch(batch, max_prompt, max_prefix, seed=batch + max_prefix)
    check_prefill(q_lens, kv_lens, 32, 8, 128, 64, torch.bfloat16, window, policy)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("policy", [0, 8, 4])
@pytest.mark.parametrize(
    "batch,max_prompt,max_prefix,window",
    [(8, 1024, 0, None), (8, 512, 3072, None), (4, 2048, 2048, 1000)],
)
def test_prefill_over_new_tokens_llama3_shapes(policy, batch, max_prompt, max_prefix, window):
    q_lens, kv_lens = llama3_batch(batch, max_prompt, max_prefix, seed=batch + max_prefix)
    check_prefill(q_lens, kv_lens, 32, 8, 128, 64, torch.bfloat16, window, policy, fresh=True)


# Gemma-2-9B: 16 query heads, 8 K/V heads of 256, scores capped at 50, local layers' 4096 window.
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("window", [None, 4096])
def test_softcapped_prefill_gemma2_shapes(window):
    q_lens, kv_lens = llama3_batch(4, 2048, 4096, seed=9)
    check_prefill(q_lens, kv_lens, 16, 8, 256, 64, torch.bfloat16, window, softcap=50.0,
                  q_spread=8.0)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_prefill_head_dim_256(dtype):
    # Gemma-style wide heads take the smaller tile configuration.
    check_prefill([300, 77], [700, 77], 8, 4, 256, 64, dtype, None)


@pytest.mark.triton_interpret
@needs_kernels
def test_prefill_writes_into_a_view_of_a_larger_output():
    # A mixed step runs its decodes through the decode kernel into the first rows of one output
    # and its prompts through this one into the rest, with their host-known longest length.
    gen = make_generator(11)
    kv = make_paged_kv([40, 77], 2, 32, 16, torch.float32, gen)
    q = randn((45, 8, 32), torch.float32, gen)
    cu_q_lens = torch.tensor([0, 5, 45], dtype=torch.int32, device=DEVICE)
    args = (q, kv.k_cache, kv.v_cache, kv.block_tables, cu_q_lens, kv.kv_lens, 32**-0.5)
    full = torch.full((48, 8, 32), 7.0, device=DEVICE)
    got = paged_prefill_attention(*args, max_q_len=40, out=full[3:])
    assert got.data_ptr() == full[3:].data_ptr()
    assert torch.equal(full[:3], torch.full((3, 8, 32), 7.0, device=DEVICE))
    assert_close(full[3:], reference.paged_prefill_attention(*args))
    ref_full = torch.zeros(45, 8, 32, device=DEVICE)
    reference.paged_prefill_attention(*args, out=ref_full)
    assert_close(ref_full, full[3:])
