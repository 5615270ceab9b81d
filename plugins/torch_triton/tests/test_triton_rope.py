"""Triton RoPE fused with the paged K/V write, and the K/V write alone, against the PyTorch
reference: rotated queries, and the whole cache after the write (other slots untouched), plain
and quantized (int8, int4)."""

import os

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from conftest_triton import (  # noqa: E402
    DEVICE,
    DTYPES,
    QUANT_DTYPES,
    TOLERANCES,
    assert_close,
    make_generator,
    needs_gpu,
    needs_kernels,
    randn,
)
from lmforge_torch_triton import kv_cache  # noqa: E402
from lmforge_torch_triton.kv_cache import code_dim  # noqa: E402
from lmforge_torch_triton.ops import reference  # noqa: E402
from lmforge_torch_triton.ops.triton_rope import rope_and_store_kv, store_kv  # noqa: E402


def make_inputs(tokens, num_heads, num_kv_heads, head_dim, block_size, dtype, seed=0):
    gen = make_generator(seed)
    num_blocks = tokens // block_size + 2
    q = randn((tokens, num_heads, head_dim), dtype, gen)
    k = randn((tokens, num_kv_heads, head_dim), dtype, gen)
    v = randn((tokens, num_kv_heads, head_dim), dtype, gen)
    k_cache = randn((num_blocks, block_size, num_kv_heads, head_dim), dtype, gen)
    v_cache = randn((num_blocks, block_size, num_kv_heads, head_dim), dtype, gen)
    # Distinct slots scattered over the pool, as shuffled block tables produce.
    slots = torch.randperm(num_blocks * block_size, generator=torch.Generator().manual_seed(seed))
    slot_mapping = slots[:tokens].to(DEVICE)
    positions = torch.randint(0, 8192, (tokens,), generator=torch.Generator().manual_seed(seed)).to(
        DEVICE
    )
    inv_freq = 1.0 / (
        500000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=DEVICE) / head_dim)
    )
    cos, sin = reference.rope_cos_sin(positions, inv_freq)
    return q, k, v, cos, sin, k_cache, v_cache, slot_mapping


def check_rope_and_store(tokens, num_heads, num_kv_heads, head_dim, block_size, dtype):
    q, k, v, cos, sin, k_cache, v_cache, slots = make_inputs(
        tokens, num_heads, num_kv_heads, head_dim, block_size, dtype
    )
    ref_k_cache, ref_v_cache = k_cache.clone(), v_cache.clone()
    q_ref, k_ref = reference.apply_rope(q, k, cos, sin)
    reference.store_kv(k_ref, v, ref_k_cache, ref_v_cache, slots)

    q_rot = rope_and_store_kv(q, k, v, cos, sin, k_cache, v_cache, slots)
    assert q_rot.shape == q.shape and q_rot.dtype == dtype
    assert_close(q_rot, q_ref)
    assert_close(k_cache, ref_k_cache)
    assert torch.equal(v_cache, ref_v_cache)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim", [(4, 4, 32), (8, 2, 64), (6, 1, 48)])
def test_rope_and_store_kv_matches_reference(dtype, num_heads, num_kv_heads, head_dim):
    check_rope_and_store(19, num_heads, num_kv_heads, head_dim, 16, dtype)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_store_kv_matches_reference(dtype):
    _, k, v, _, _, k_cache, v_cache, slots = make_inputs(21, 4, 3, 40, 8, dtype)
    ref_k_cache, ref_v_cache = k_cache.clone(), v_cache.clone()
    reference.store_kv(k, v, ref_k_cache, ref_v_cache, slots)
    store_kv(k, v, k_cache, v_cache, slots)
    assert torch.equal(k_cache, ref_k_cache)
    assert torch.equal(v_cache, ref_v_cache)


@pytest.mark.triton_interpret
@needs_kernels
def test_negative_slots_are_not_written():
    q, k, v, cos, sin, k_cache, v_cache, slots = make_inputs(6, 4, 2, 32, 16, torch.float32)
    slots[2] = -1
    kept = slots >= 0
    ref_k_cache, ref_v_cache = k_cache.clone(), v_cache.clone()
    k_ref = reference.apply_rope(q, k, cos, sin)[1]
    reference.store_kv(k_ref[kept], v[kept], ref_k_cache, ref_v_cache, slots[kept])

    rope_and_store_kv(q, k, v, cos, sin, k_cache, v_cache, slots)
    assert_close(k_cache, ref_k_cache)
    assert torch.equal(v_cache, ref_v_cache)


@pytest.mark.triton_interpret
@needs_kernels
def test_rope_rejects_wrong_table_shape():
    q, k, v, cos, sin, k_cache, v_cache, slots = make_inputs(4, 4, 2, 32, 16, torch.float32)
    with pytest.raises(ValueError, match="cos and sin"):
        rope_and_store_kv(q, k, v, cos[:, :8], sin[:, :8], k_cache, v_cache, slots)


# Llama-3-8B: 32 query heads, 8 K/V heads, head_dim 128, block 64; a decode batch and a prefill.
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("tokens", [64, 4096])
def test_rope_and_store_kv_llama3_shapes(dtype, tokens):
    check_rope_and_store(tokens, 32, 8, 128, 64, dtype)


def empty_caches(k_cache, v_cache, head_dim, policy):
    """``(k_cache, v_cache, quant, ref_quant)``: the float caches as given at policy 0, else
    zeroed code caches of the same blocks with zeroed scales and zeros, and the keyword
    arguments for the kernel and (on copies of the scales) for the reference."""
    if not policy:
        return k_cache, v_cache, {}, {}
    blocks = k_cache.shape[:3]
    k_cache, v_cache = (torch.zeros(*blocks, code_dim(head_dim, policy), dtype=torch.uint8,
                                    device=DEVICE) for _ in range(2))
    quant = dict(k_scales_zeros=torch.zeros(*blocks, 2, device=DEVICE),
                 v_scales_zeros=torch.zeros(*blocks, 2, device=DEVICE), quant_policy=policy)
    ref_quant = {**quant, "k_scales_zeros": quant["k_scales_zeros"].clone(),
                 "v_scales_zeros": quant["v_scales_zeros"].clone()}
    return k_cache, v_cache, quant, ref_quant


def check_quantized_store(tokens, num_heads, num_kv_heads, head_dim, block_size, dtype, policy,
                          rope=True):
    """The kernel's codes, scales and zeros against the values it was given (the reference's
    rotated K, and V): each value within half a step of its code, scales and zeros those of the
    reference quantization, and the slots not written untouched. The rotated K may differ from
    the reference's by a 16-bit rounding, so codes equal the reference's only in float32. At int4
    with a power-of-two head dim both hold keys, and return queries, in the Hadamard basis."""
    q, k, v, cos, sin, _, _, slots = make_inputs(
        tokens, num_heads, num_kv_heads, head_dim, block_size, dtype
    )
    gen = make_generator(1)
    num_blocks = tokens // block_size + 2
    shape = (num_blocks, block_size, num_kv_heads)
    codes = code_dim(head_dim, policy)
    caches = [torch.randint(0, 256, (*shape, codes), dtype=torch.uint8, generator=gen,
                            device=DEVICE) for _ in range(2)]
    scales = [randn((*shape, 2), torch.float32, gen) for _ in range(2)]
    ref = [t.clone() for t in (*caches, *scales)]
    quant = dict(k_scales_zeros=scales[0], v_scales_zeros=scales[1], quant_policy=policy)
    ref_quant = dict(k_scales_zeros=ref[2], v_scales_zeros=ref[3], quant_policy=policy)
    if rope:
        k_ref = reference.apply_rope(q, k, cos, sin)[1]
        q_ref = reference.rope_and_store_kv(q, k, v, cos, sin, ref[0], ref[1], slots, **ref_quant)
        q_rot = rope_and_store_kv(q, k, v, cos, sin, *caches, slots, **quant)
        assert_close(q_rot, q_ref)
    else:
        k_ref = k
        reference.store_kv(k, v, ref[0], ref[1], slots, **ref_quant)
        store_kv(k, v, *caches, slots, **quant)
    # What the codes hold: at int4 with a power-of-two head dim, keys in the Hadamard basis.
    k_ref = kv_cache.to_key_basis(k_ref, policy)
    untouched = torch.ones(num_blocks * block_size, dtype=torch.bool, device=DEVICE)
    untouched[slots] = False
    tol = TOLERANCES[dtype]
    pairs = zip((k_ref, v), caches, ref[:2], scales, ref[2:], strict=True)
    for values, got, want, got_sz, want_sz in pairs:
        assert torch.equal(got.flatten(0, 1)[untouched], want.flatten(0, 1)[untouched])
        assert torch.equal(got_sz.flatten(0, 1)[untouched], want_sz.flatten(0, 1)[untouched])
        got_sz, want_sz = got_sz.flatten(0, 1)[slots], want_sz.flatten(0, 1)[slots]
        torch.testing.assert_close(got_sz, want_sz, **tol)
        got_values = kv_cache.dequantize(got.flatten(0, 1)[slots], got_sz, policy)
        error = (got_values - values.float()).abs()
        assert (error <= 0.501 * got_sz[..., :1] + tol["atol"] + tol["rtol"] * values.abs()).all()
        if dtype == torch.float32:
            same = got.flatten(0, 1)[slots] == want.flatten(0, 1)[slots]
            assert same.float().mean() > 0.99


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("policy", [8, 4])
@pytest.mark.parametrize("dtype", QUANT_DTYPES, ids=str)
@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim", [(4, 4, 32), (6, 3, 40)])
def test_rope_and_store_quantizes_like_the_reference(dtype, policy, num_heads, num_kv_heads,
                                                     head_dim):
    check_quantized_store(19, num_heads, num_kv_heads, head_dim, 16, dtype, policy)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("policy", [8, 4])
@pytest.mark.parametrize("head_dim", [40, 64])
def test_store_kv_quantizes_like_the_reference(policy, head_dim):
    check_quantized_store(21, 4, 3, head_dim, 8, torch.bfloat16, policy, rope=False)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("policy", [0, 8, 4])
@pytest.mark.parametrize("dtype", QUANT_DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", [32, 40])
def test_rope_returns_the_rotated_keys(policy, dtype, head_dim):
    """``k_out`` holds the rotated keys unquantized in the cache's key basis (at int4 with a
    power-of-two head dim, the Hadamard one), as the reference gives them; without a quantized
    cache, exactly the rows stored."""
    q, k, v, cos, sin, k_cache, v_cache, slots = make_inputs(19, 4, 2, head_dim, 16, dtype)
    k_cache, v_cache, quant, ref_quant = empty_caches(k_cache, v_cache, head_dim, policy)
    ref_caches = k_cache.clone(), v_cache.clone()
    k_out, k_ref = torch.full_like(k, float("nan")), torch.full_like(k, float("nan"))
    reference.rope_and_store_kv(q, k, v, cos, sin, *ref_caches, slots, **ref_quant, k_out=k_ref)
    rope_and_store_kv(q, k, v, cos, sin, k_cache, v_cache, slots, **quant, k_out=k_out)
    assert_close(k_out, k_ref)
    if not policy:
        assert torch.equal(k_out, k_cache.flatten(0, 1)[slots])


@pytest.mark.triton_interpret
@needs_kernels
def test_rope_rejects_a_k_out_of_another_shape():
    q, k, v, cos, sin, k_cache, v_cache, slots = make_inputs(4, 4, 2, 32, 16, torch.float32)
    with pytest.raises(ValueError, match="k_out"):
        rope_and_store_kv(q, k, v, cos, sin, k_cache, v_cache, slots, k_out=k[:3])


@pytest.mark.triton_interpret
@needs_kernels
def test_quantized_store_rejects_a_float_cache():
    q, k, v, cos, sin, k_cache, v_cache, slots = make_inputs(4, 4, 2, 32, 16, torch.float32)
    sz = torch.zeros(*k_cache.shape[:3], 2, device=DEVICE)
    with pytest.raises(ValueError, match="uint8"):
        rope_and_store_kv(q, k, v, cos, sin, k_cache, v_cache, slots, k_scales_zeros=sz,
                          v_scales_zeros=sz, quant_policy=8)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("policy", [8, 4])
@pytest.mark.parametrize("tokens", [64, 4096])
def test_rope_and_store_quantized_llama3_shapes(policy, tokens):
    check_quantized_store(tokens, 32, 8, 128, 64, torch.bfloat16, policy)


def check_head_norm(tokens, num_heads, num_kv_heads, head_dim, block_size, dtype, offset,
                    policy=0):
    """Per-head q and k norms before the rotation (Qwen3: weight; Gemma 3: 1 + weight), with q,
    k and v strided views of one fused projection, as the decoder passes them."""
    _, _, _, cos, sin, k_cache, v_cache, slots = make_inputs(
        tokens, num_heads, num_kv_heads, head_dim, block_size, dtype)
    gen = make_generator(7)
    qkv = randn((tokens, (num_heads + 2 * num_kv_heads) * head_dim), dtype, gen) * 3
    q, k, v = qkv.split([num_heads * head_dim, num_kv_heads * head_dim,
                         num_kv_heads * head_dim], dim=-1)
    q = q.view(tokens, num_heads, head_dim)
    k, v = (t.view(tokens, num_kv_heads, head_dim) for t in (k, v))
    norms = dict(q_norm=1.0 - offset + 0.2 * randn((head_dim,), dtype, gen),
                 k_norm=1.0 - offset + 0.2 * randn((head_dim,), dtype, gen),
                 norm_eps=1e-6, norm_offset=offset)
    k_cache, v_cache, quant, ref_quant = empty_caches(k_cache, v_cache, head_dim, policy)
    ref_k_cache, ref_v_cache = k_cache.clone(), v_cache.clone()
    q_ref = reference.rope_and_store_kv(q, k, v, cos, sin, ref_k_cache, ref_v_cache, slots,
                                        **ref_quant, **norms)
    q_rot = rope_and_store_kv(q, k, v, cos, sin, k_cache, v_cache, slots, **quant, **norms)
    assert_close(q_rot, q_ref)
    if not policy:
        assert_close(k_cache, ref_k_cache)
        assert torch.equal(v_cache, ref_v_cache)
    else:
        written = k_cache.flatten(0, 1)[slots] == ref_k_cache.flatten(0, 1)[slots]
        assert written.float().mean() > 0.99


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("offset", [0.0, 1.0], ids=["qwen3", "gemma3"])
def test_rope_with_head_norms_matches_reference(dtype, offset):
    check_head_norm(13, 4, 2, 32, 16, dtype, offset)


@pytest.mark.triton_interpret
@needs_kernels
def test_rope_with_head_norms_into_a_quantized_cache():
    check_head_norm(13, 4, 2, 32, 16, torch.float32, 0.0, policy=8)


# Qwen3-8B (32 x 8 heads of 128) and Gemma-3-12B's text layers (16 x 8 heads of 256).
@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("heads,kv_heads,head_dim,offset", [(32, 8, 128, 0.0),
                                                           (16, 8, 256, 1.0)])
@pytest.mark.parametrize("tokens", [1, 64, 4096])
def test_rope_with_head_norms_family_shapes(heads, kv_heads, head_dim, offset, tokens):
    check_head_norm(tokens, heads, kv_heads, head_dim, 64, torch.bfloat16, offset)
