"""Each CUDA kernel against its PyTorch reference (reference.py), at small shapes and at
Llama-3-8B's (hidden 4096, 32 heads over 8 K/V heads of 128, intermediate 14336)."""

from __future__ import annotations

import random

import pytest
import torch
from lmforge_turbomind_cuda import reference
from lmforge_turbomind_cuda.library import library_path

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not library_path().is_file(), reason="libturbomind.so is not built"),
]

DTYPES = [torch.float16, torch.bfloat16]
# One rounding of a 16-bit output (plus 16-bit probabilities in P @ V for attention).
TOL = {torch.float16: dict(atol=2e-3, rtol=2e-3), torch.bfloat16: dict(atol=1.6e-2, rtol=1.6e-2)}


@pytest.fixture(scope="module")
def ops():
    from lmforge_turbomind_cuda import ops

    return ops


def paged_cache(lens, kv_heads, head_dim, block_size, dtype, seed=0):
    """Random K/V in shuffled blocks, and each sequence's (padded) block table."""
    gen = torch.Generator().manual_seed(seed)
    need = [-(-n // block_size) for n in lens]
    num_blocks = sum(need) + 3
    order = list(range(num_blocks))
    random.Random(seed).shuffle(order)
    tables, start = [], 0
    for n in need:
        tables.append(order[start:start + n] + [0] * (max(need) - n))
        start += n
    shape = (num_blocks, block_size, kv_heads, head_dim)
    k = torch.randn(shape, generator=gen).to("cuda", dtype)
    v = torch.randn(shape, generator=gen).to("cuda", dtype)
    return k, v, torch.tensor(tables, dtype=torch.int32, device="cuda")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden", [256, 4096])
def test_rms_norm_with_residual_and_gather(ops, dtype, hidden):
    x = torch.randn(37, hidden, device="cuda", dtype=dtype)
    w = (1 + 0.1 * torch.randn(hidden, device="cuda")).to(dtype)
    res, res_ref = [torch.randn(37, hidden, device="cuda", dtype=dtype)] * 2
    res, res_ref = res.clone(), res_ref.clone()
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-5), reference.rms_norm(x, w, 1e-5), **TOL[dtype])
    out = ops.rms_norm(x, w, 1e-5, res)
    torch.testing.assert_close(out, reference.rms_norm(x, w, 1e-5, res_ref), **TOL[dtype])
    torch.testing.assert_close(res, res_ref, rtol=0, atol=0)
    index = torch.tensor([36, 0, 5], device="cuda")
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-5, index=index),
                               reference.rms_norm(x, w, 1e-5, index=index), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_and_silu_mul(ops, dtype):
    embed = torch.randn(1000, 4096, device="cuda", dtype=dtype)
    ids = torch.tensor([3, 999, 0, 3], device="cuda")
    torch.testing.assert_close(ops.embedding(embed, ids), reference.embedding(embed, ids),
                               rtol=0, atol=0)
    gate_up = torch.randn(5, 2 * 14336, device="cuda", dtype=dtype)
    torch.testing.assert_close(ops.silu_mul(gate_up), reference.silu_mul(gate_up), **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim", "bias"),
                         [(4, 2, 64, True), (32, 8, 128, False)])
def test_rope_writes_the_rotated_kv_into_the_cache(ops, dtype, heads, kv_heads, head_dim, bias):
    from lmforge.model.config import RopeConfig
    from lmforge.model.rope import rope_inv_freq

    tokens, block_size = 20, 16
    width = (heads + 2 * kv_heads) * head_dim
    qkv = torch.randn(tokens, width, device="cuda", dtype=dtype)
    b = torch.randn(width, device="cuda", dtype=dtype) if bias else None
    inv_freq = rope_inv_freq(RopeConfig(theta=500000.0), head_dim).cuda()
    positions = torch.arange(100, 100 + tokens, device="cuda", dtype=torch.int32)
    slots = torch.randperm(64, device="cuda")[:tokens].int()
    slots[3] = -1  # a padding row: nothing is written
    caches = [torch.zeros(4, block_size, kv_heads, head_dim, device="cuda", dtype=dtype)
              for _ in range(4)]
    got, want = qkv.clone(), qkv.clone()
    ops.rope_kv(got, b, inv_freq, positions, slots, caches[0], caches[1], heads, kv_heads)
    reference.rope_kv(want, b, inv_freq, positions, slots, caches[2], caches[3], heads, kv_heads)
    q = heads * head_dim
    torch.testing.assert_close(got[:, :q], want[:, :q], **TOL[dtype])
    torch.testing.assert_close(caches[0], caches[2], **TOL[dtype])
    torch.testing.assert_close(caches[1], caches[3], rtol=0, atol=0)


def decode_case(ops, dtype, lens, heads, kv_heads, head_dim, block_size, num_splits, window,
                seed=0):
    """The decode kernel and the reference on random q and a shuffled paged cache."""
    k, v, tables = paged_cache(lens, kv_heads, head_dim, block_size, dtype, seed)
    # q as the decode kernel meets it: strided rows of the fused qkv output.
    gen = torch.Generator().manual_seed(seed + 1)
    qkv = torch.randn(len(lens), (heads + 2 * kv_heads) * head_dim, generator=gen)
    q = qkv.to("cuda", dtype)[:, : heads * head_dim].view(len(lens), heads, head_dim)
    kv_lens = torch.tensor(lens, device="cuda")
    scale = head_dim**-0.5
    got = ops.decode_attention(q, k, v, tables, kv_lens, scale, window, num_splits)
    want = reference.paged_attention(q, k, v, tables, lens, list(range(len(lens) + 1)), scale,
                                     window)
    return got, want


# Groups of 1, 2, 4, 7, 8 and 20 query heads (20: two blocks of the tensor-core kernel's 16
# rows, the second one 4 rows full). Contexts: one token, under a 64-key tile, one tile exactly,
# one past it, long ones; windows that start inside a block and a tile; more splits than a
# short context has tiles (empty splits).
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"),
                         [(4, 2, 64), (32, 8, 128), (12, 12, 64), (28, 4, 128), (64, 8, 64),
                          (40, 2, 128)])
@pytest.mark.parametrize("block_size", [16, 64])
@pytest.mark.parametrize("num_splits", [1, 5, 16])
@pytest.mark.parametrize("window", [0, 40])
def test_decode_attention(ops, dtype, heads, kv_heads, head_dim, block_size, num_splits, window):
    lens = [1, 17, 64, 65, 300, 1031]
    got, want = decode_case(ops, dtype, lens, heads, kv_heads, head_dim, block_size, num_splits,
                            window)
    torch.testing.assert_close(got, want, **TOL[dtype])


# Llama-3-8B's heads at the engine's batch sizes, with the splits the runner picks on an H200.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 64, 256])
def test_decode_attention_at_serving_batches(ops, dtype, batch):
    from lmforge_turbomind_cuda.steps import decode_splits

    lens = [random.Random(batch + i).randint(1, 700) for i in range(batch)]
    splits = decode_splits(batch, 8, num_sms=132)
    got, want = decode_case(ops, dtype, lens, 32, 8, 128, 128, splits, 0, seed=2)
    torch.testing.assert_close(got, want, **TOL[dtype])


def test_decode_attention_cuda_core_fallback():
    """LMFORGE_TURBOMIND_DECODE=simt (read once per process) runs the CUDA-core kernel."""
    import os
    import subprocess
    import sys

    script = (
        "import torch, test_kernels_gpu as t\n"
        "from lmforge_turbomind_cuda import ops\n"
        "for dtype in t.DTYPES:\n"
        "    for heads, kv_heads, d in [(4, 2, 64), (28, 4, 128)]:\n"
        "        for splits in [1, 5]:\n"
        "            got, want = t.decode_case(ops, dtype, [1, 17, 300, 1031], heads, kv_heads,\n"
        "                                      d, 16, splits, 40)\n"
        "            torch.testing.assert_close(got, want, **t.TOL[dtype])\n"
    )
    env = dict(os.environ, LMFORGE_TURBOMIND_DECODE="simt")
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(__file__), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("heads", "kv_heads", "head_dim"), [(4, 2, 64), (32, 8, 128),
                                                             (12, 12, 64), (28, 4, 128)])
@pytest.mark.parametrize("window", [0, 50])
def test_prefill_attention_over_a_cached_prefix(ops, dtype, heads, kv_heads, head_dim, window):
    # (prefix, new tokens): a whole prompt, a chunk after a prefix, one token, a long prompt.
    shapes = [(0, 70), (37, 9), (100, 1), (0, 200), (130, 64)]
    lens = [p + n for p, n in shapes]
    k, v, tables = paged_cache(lens, kv_heads, head_dim, 16, dtype, seed=1)
    starts = [0]
    for _, n in shapes:
        starts.append(starts[-1] + n)
    q = torch.randn(starts[-1], heads, head_dim, device="cuda", dtype=dtype)
    kv_lens = torch.tensor(lens, device="cuda")
    scale = head_dim**-0.5
    got = ops.prefill_attention(q, k, v, tables, kv_lens, starts, scale, window)
    want = reference.paged_attention(q, k, v, tables, lens, starts, scale, window)
    torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("m", "path"), [(1, 1), (3, 1), (8, 1), (8, 2), (40, 2), (300, 0)])
@pytest.mark.parametrize(("n", "k"), [(6144, 4096), (4096, 14336), (200, 256)])
def test_linear(ops, dtype, m, path, n, k):
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    w = torch.randn(n, k, device="cuda", dtype=dtype) * k**-0.5
    torch.testing.assert_close(ops.linear(x, w, path), reference.linear(x, w), **TOL[dtype])
