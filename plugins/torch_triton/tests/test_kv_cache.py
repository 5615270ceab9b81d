"""The quantized K/V cache layout and its reference ops: quantization error, int4 packing,
sizes, and paged attention over a quantized pool against attention over its values."""

from __future__ import annotations

import pytest
import torch
from lmforge.model.config import ModelConfig
from lmforge_torch_triton import kv_cache
from lmforge_torch_triton.ops import reference as ops

NB, BS, NKV, NH, D = 12, 4, 2, 4, 8


@pytest.mark.parametrize("policy", [8, 4])
def test_quantize_is_within_half_a_step(policy):
    torch.manual_seed(0)
    x = torch.randn(50, NKV, D) * 3 + torch.randn(50, NKV, 1) * 10
    codes, sz = kv_cache.quantize(x, policy)
    assert codes.dtype == torch.uint8 and codes.shape == (50, NKV, kv_cache.code_dim(D, policy))
    assert sz.dtype == torch.float32 and sz.shape == (50, NKV, 2)
    scale, zero = sz[..., 0], sz[..., 1]
    assert torch.equal(zero, x.amin(-1))
    torch.testing.assert_close(scale * (2**policy - 1), x.amax(-1) - x.amin(-1))
    error = (kv_cache.dequantize(codes, sz, policy) - x).abs()
    assert (error <= scale[..., None] * 0.5001).all()
    # The extremes of every row are exact up to float rounding.
    values = kv_cache.dequantize(codes, sz, policy)
    torch.testing.assert_close(values.amin(-1), x.amin(-1))
    torch.testing.assert_close(values.amax(-1), x.amax(-1), rtol=1e-5, atol=1e-5)


def test_int4_packs_the_two_rotary_halves_into_one_byte():
    x = torch.tensor([0.0, 1, 2, 3, 12, 13, 14, 15]).view(1, 1, 8)  # its own codes: scale 1
    codes, sz = kv_cache.quantize(x, 4)
    assert sz.flatten().tolist() == [1.0, 0.0]
    # Byte j: dimension j in the low nibble, dimension j + 4 in the high one.
    assert codes.flatten().tolist() == [0 | 12 << 4, 1 | 13 << 4, 2 | 14 << 4, 3 | 15 << 4]


@pytest.mark.parametrize("policy", [8, 4])
def test_constant_rows_are_exact(policy):
    x = torch.full((3, NKV, D), -2.5)
    codes, sz = kv_cache.quantize(x, policy)
    assert torch.equal(kv_cache.dequantize(codes, sz, policy), x)


def test_bytes_per_token_and_allocation():
    config = ModelConfig(architecture="LlamaForCausalLM", num_layers=32, hidden_size=4096,
                         num_heads=32, num_kv_heads=8, head_dim=128, intermediate_size=14336,
                         vocab_size=128256)
    bf16 = kv_cache.bytes_per_token(config, torch.bfloat16, 0)
    assert bf16 == 2 * 32 * 8 * 128 * 2 == 131072
    assert kv_cache.bytes_per_token(config, torch.bfloat16, 8) == 2 * 32 * 8 * (128 + 8)
    assert kv_cache.bytes_per_token(config, torch.bfloat16, 4) == 2 * 32 * 8 * (64 + 8)
    assert bf16 / kv_cache.bytes_per_token(config, torch.bfloat16, 4) == pytest.approx(3.56, 0.01)
    small = ModelConfig(architecture="LlamaForCausalLM", num_layers=2, hidden_size=16,
                        num_heads=4, num_kv_heads=2, head_dim=8, intermediate_size=32,
                        vocab_size=10)
    layers = kv_cache.allocate(small, 5, 4, torch.float32, 4, torch.device("cpu"))
    assert len(layers) == 2
    layer = layers[0]
    assert layer.k.shape == (5, 4, 2, 4) and layer.k.dtype == torch.uint8
    assert layer.v_scales_zeros.shape == (5, 4, 2, 2)
    assert set(layer.quant_args) == {"k_scales_zeros", "v_scales_zeros", "quant_policy"}
    assert kv_cache.allocate(small, 5, 4, torch.float32, 0, torch.device("cpu"))[0].quant_args == {}


def _layer(policy: int) -> kv_cache.LayerKVCache:
    config = ModelConfig(architecture="LlamaForCausalLM", num_layers=1, hidden_size=NH * D,
                         num_heads=NH, num_kv_heads=NKV, head_dim=D, intermediate_size=8,
                         vocab_size=8)
    return kv_cache.allocate(config, NB, BS, torch.float32, policy, torch.device("cpu"))[0]


def _store(policy):
    """Three sequences written into a shuffled pool, quantized, and their K/V values as the
    cache holds them (dequantized)."""
    torch.manual_seed(1)
    layer = _layer(policy)
    kv_lens, tables = [9, 3, 6], [[5, 11, 2], [7], [10, 0]]
    values = []
    for table, n in zip(tables, kv_lens, strict=True):
        k, v = torch.randn(n, NKV, D), torch.randn(n, NKV, D) + 1.5
        slots = torch.tensor([table[p // BS] * BS + p % BS for p in range(n)])
        ops.store_kv(k, v, layer.k, layer.v, slots, **layer.quant_args)
        if policy:
            k, v = (kv_cache.dequantize(*kv_cache.quantize(t, policy), policy) for t in (k, v))
        values.append((k, v))
    padded = torch.tensor([t + [0] * (3 - len(t)) for t in tables], dtype=torch.int32)
    return layer, torch.tensor(kv_lens, dtype=torch.int32), padded, values


@pytest.mark.parametrize("policy", [8, 4])
def test_attention_reads_the_dequantized_values(policy):
    layer, kv_lens, tables, values = _store(policy)
    plain = _layer(0)
    for (k, v), table, n in zip(values, tables.tolist(), kv_lens.tolist(), strict=True):
        slots = torch.tensor([table[p // BS] * BS + p % BS for p in range(n)])
        ops.store_kv(k, v, plain.k, plain.v, slots)
    q = torch.randn(3, NH, D)
    cu = torch.tensor([0, 1, 2, 3], dtype=torch.int32)
    for window in (None, 4):
        args = (tables, kv_lens, D**-0.5, window)
        want = ops.paged_decode_attention(q, plain.k, plain.v, *args)
        got = ops.paged_decode_attention(q, layer.k, layer.v, *args, **layer.quant_args)
        torch.testing.assert_close(got, want)
        got = ops.paged_prefill_attention(q, layer.k, layer.v, tables, cu, kv_lens, D**-0.5,
                                          window, **layer.quant_args)
        torch.testing.assert_close(got, want)
    # One sequence over consecutive blocks takes the decode path that views the pool.
    one = torch.tensor([[5, 6, 7]], dtype=torch.int32)
    got = ops.paged_decode_attention(q[:1], layer.k, layer.v, one, kv_lens[:1], D**-0.5,
                                     **layer.quant_args)
    want = ops.paged_decode_attention(q[:1], plain.k, plain.v, one, kv_lens[:1], D**-0.5)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("policy,tolerance", [(8, 0.02), (4, 0.3)])
def test_quantized_attention_is_close_to_unquantized(policy, tolerance):
    layer, kv_lens, tables, _ = _store(policy)
    plain, *_ = _store(0)
    q = torch.randn(3, NH, D)
    args = (tables, kv_lens, D**-0.5)
    want = ops.paged_decode_attention(q, plain.k, plain.v, *args)
    got = ops.paged_decode_attention(q, layer.k, layer.v, *args, **layer.quant_args)
    assert (got - want).abs().max() < tolerance


def test_hadamard_is_orthogonal_with_popcount_signs():
    h = kv_cache.hadamard(16, torch.device("cpu"))
    torch.testing.assert_close(h @ h.T, torch.eye(16))
    signs = [[(-1) ** bin(i & j).count("1") for j in range(16)] for i in range(16)]
    torch.testing.assert_close(h * 4, torch.tensor(signs, dtype=torch.float32))
    assert kv_cache.rotates_keys(4, 128) and kv_cache.rotates_keys(4, 32)
    assert not kv_cache.rotates_keys(4, 80) and not kv_cache.rotates_keys(8, 128)


def test_int4_keys_and_queries_share_the_hadamard_basis():
    torch.manual_seed(2)
    d, nkv, nh, bs, n = 32, 2, 4, 4, 64
    config = ModelConfig(architecture="LlamaForCausalLM", num_layers=1, hidden_size=nh * d,
                         num_heads=nh, num_kv_heads=nkv, head_dim=d, intermediate_size=8,
                         vocab_size=8)
    int4, plain = (kv_cache.allocate(config, n // bs, bs, torch.float32, p, torch.device("cpu"))[0]
                   for p in (4, 0))
    q, k, v = torch.randn(n, nh, d), torch.randn(n, nkv, d), torch.randn(n, nkv, d)
    k[..., 3] *= 20  # an outlier channel, as real keys have
    inv_freq = 1.0 / 10000 ** (torch.arange(0, d, 2).float() / d)
    cos, sin = ops.rope_cos_sin(torch.arange(n), inv_freq)
    slots = torch.arange(n)
    q_int4 = ops.rope_and_store_kv(q, k, v, cos, sin, int4.k, int4.v, slots, **int4.quant_args)
    q_plain = ops.rope_and_store_kv(q, k, v, cos, sin, plain.k, plain.v, slots)
    h = kv_cache.hadamard(d, torch.device("cpu"))
    torch.testing.assert_close(q_int4, q_plain @ h)
    keys = kv_cache.dequantize(int4.k, int4.k_scales_zeros, 4).flatten(0, 1)
    step = int4.k_scales_zeros.flatten(0, 1)[..., :1]
    exact = plain.k.flatten(0, 1)
    assert ((keys - exact @ h).abs() <= 0.5001 * step).all()
    # Attention scores q . k of each token's first query head of each group: the rotation halves
    # their error against storing the same int4 keys unrotated.
    scores = (q_plain[:, ::2] * exact).sum(-1)
    rotated = (q_int4[:, ::2] * keys).sum(-1)
    unrotated = (q_plain[:, ::2] * kv_cache.dequantize(*kv_cache.quantize(exact, 4), 4)).sum(-1)
    assert (rotated - scores).abs().mean() < 0.7 * (unrotated - scores).abs().mean()
