"""The single-sequence fast path of the reference decode attention equals the batched path."""

from __future__ import annotations

import pytest
import torch
from lmforge_torch_triton.ops import reference


@pytest.mark.parametrize("table", [[3, 4, 5, 6], [6, 2, 5, 0], [7]])
def test_single_sequence_matches_batched_path(table):
    torch.manual_seed(0)
    nb, bs, nkv, nh, d = 8, 4, 2, 6, 16
    k_cache, v_cache = torch.randn(nb, bs, nkv, d), torch.randn(nb, bs, nkv, d)
    kv_len = len(table) * bs - 1
    q = torch.randn(1, nh, d)
    tables = torch.tensor([table], dtype=torch.int32)
    lens = torch.tensor([kv_len], dtype=torch.int32)
    single = reference.paged_decode_attention(q, k_cache, v_cache, tables, lens, 0.25)
    # Two copies of the sequence take the general, masked path.
    both = reference.paged_decode_attention(q.repeat(2, 1, 1), k_cache, v_cache,
                                            tables.repeat(2, 1), lens.repeat(2), 0.25)
    torch.testing.assert_close(single[0], both[0])
    # And both equal attention written out by hand.
    ids = torch.tensor(table)
    k = k_cache[ids].reshape(-1, nkv, d)[:kv_len].repeat_interleave(nh // nkv, dim=1)
    v = v_cache[ids].reshape(-1, nkv, d)[:kv_len].repeat_interleave(nh // nkv, dim=1)
    weights = torch.softmax(torch.einsum("hd,khd->hk", q[0], k) * 0.25, dim=-1)
    torch.testing.assert_close(single[0], torch.einsum("hk,khd->hd", weights, v))
