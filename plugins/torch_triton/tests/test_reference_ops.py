"""The pure-PyTorch ops against naive per-sequence computations."""

from __future__ import annotations

import pytest
import torch
from lmforge_torch_triton.ops import reference as ops

NB, BS, NKV, NH, D = 24, 4, 2, 4, 8


def _naive(q, k, v, q_pos, window):
    """Causal attention of queries at ``q_pos`` over keys 0 … len(k)-1, per head, float64."""
    k = k.repeat_interleave(NH // NKV, dim=1).double()
    v = v.repeat_interleave(NH // NKV, dim=1).double()
    scores = torch.einsum("qhd,khd->hqk", q.double(), k) * D**-0.5
    key = torch.arange(k.shape[0])
    mask = key[None, :] <= q_pos[:, None]
    if window is not None:
        mask &= key[None, :] > q_pos[:, None] - window
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).float()


@pytest.mark.parametrize("window", [None, 3])
def test_paged_attention_matches_naive(window):
    torch.manual_seed(0)
    k_cache, v_cache = torch.zeros(NB, BS, NKV, D), torch.zeros(NB, BS, NKV, D)
    kv_lens, q_lens = [9, 3, 6], [4, 3, 1]
    tables = [[5, 11, 2], [7], [20, 0]]
    padded = torch.tensor([t + [0] * (3 - len(t)) for t in tables], dtype=torch.int32)
    keys = [torch.randn(n, NKV, D) for n in kv_lens]
    values = [torch.randn(n, NKV, D) for n in kv_lens]
    for table, k, v in zip(tables, keys, values, strict=True):
        slots = torch.tensor([table[p // BS] * BS + p % BS for p in range(len(k))])
        ops.store_kv(k, v, k_cache, v_cache, slots)
    q = torch.randn(sum(q_lens), NH, D)
    cu = torch.tensor([0, 4, 7, 8], dtype=torch.int32)
    out = ops.paged_prefill_attention(
        q, k_cache, v_cache, padded, cu, torch.tensor(kv_lens, dtype=torch.int32), D**-0.5, window
    )
    expected = torch.cat(
        [
            _naive(
                q[cu[b] : cu[b + 1]],
                keys[b],
                values[b],
                torch.arange(kv_lens[b] - n, kv_lens[b]),
                window,
            )
            for b, n in enumerate(q_lens)
        ]
    )
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)

    last = q[cu[1:] - 1]
    decode = ops.paged_decode_attention(
        last, k_cache, v_cache, padded, torch.tensor(kv_lens, dtype=torch.int32), D**-0.5, window
    )
    torch.testing.assert_close(decode, expected[cu[1:] - 1], rtol=1e-5, atol=1e-5)


def test_rms_norm_residual_and_activation():
    torch.manual_seed(0)
    x, res, w = torch.randn(5, 16), torch.randn(5, 16), torch.randn(16)
    out, new_res = ops.rms_norm(x, w, 1e-6, res)
    total = x + res
    torch.testing.assert_close(new_res, total)
    torch.testing.assert_close(
        out, w * total / total.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    )
    gate_up = torch.randn(5, 12)
    torch.testing.assert_close(
        ops.silu_and_mul(gate_up), torch.nn.functional.silu(gate_up[:, :6]) * gate_up[:, 6:]
    )


def test_rope_matches_transformers():
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    torch.manual_seed(0)
    q, k = torch.randn(6, NH, D), torch.randn(6, NKV, D)
    positions = torch.tensor([0, 1, 2, 7, 8, 30])
    inv_freq = 1.0 / (10000 ** (torch.arange(0, D, 2).float() / D))
    cos, sin = ops.rope_cos_sin(positions, inv_freq)
    got_q, got_k = ops.apply_rope(q, k, cos, sin)
    full_cos, full_sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
    want_q, want_k = apply_rotary_pos_emb(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], full_cos[None], full_sin[None]
    )
    torch.testing.assert_close(got_q, want_q[0].transpose(0, 1))
    torch.testing.assert_close(got_k, want_k[0].transpose(0, 1))
