"""AWQ's scale candidates and clipping search."""

from __future__ import annotations

from functools import partial

import torch
from lmforge_quant_awq.int4 import fake_quantize
from lmforge_quant_awq.search import apply_clip, scale_candidates, search_clip, weight_mean


def test_candidates_are_the_normalized_grid():
    x_mean = torch.tensor([0.1, 1.0, 10.0])
    candidates = scale_candidates(x_mean, search=True)
    assert len(candidates) == 20
    assert torch.equal(candidates[0], torch.ones(3))
    for s in candidates:
        torch.testing.assert_close((s.max() * s.min()).sqrt(), torch.tensor(1.0))
    r = 0.5
    expected = x_mean.pow(r) / (x_mean.pow(r).max() * x_mean.pow(r).min()).sqrt()
    torch.testing.assert_close(candidates[10], expected)
    assert len(scale_candidates(x_mean, search=False)) == 1
    torch.testing.assert_close(scale_candidates(x_mean, search=False)[0], expected)


def test_weight_aware_candidates_follow_autoawq():
    w = torch.tensor([[1.0, -2.0, 4.0, 0.5], [2.0, 2.0, -1.0, 1.0]])
    w_mean = weight_mean([w[:1], w[1:]], group_size=2)
    # Each weight over its group's largest magnitude, averaged over the output rows.
    torch.testing.assert_close(w_mean, torch.tensor([(0.5 + 1.0) / 2, (1.0 + 1.0) / 2,
                                                     (1.0 + 1.0) / 2, (0.125 + 1.0) / 2]))
    x_mean = torch.tensor([1.0, 2.0, 3.0, 4.0])
    candidates = scale_candidates(x_mean, search=True, w_mean=w_mean)
    assert len(candidates) == 40
    raw = x_mean.pow(0.25) / (w_mean.pow(0.75) + 1e-4)
    torch.testing.assert_close(candidates[25], raw / (raw.max() * raw.min()).sqrt())


def _partial_error(w, x, group):
    n, k = w.shape
    xg = x.reshape(-1, k // group, group)
    ref = torch.einsum("tgc,ngc->tng", xg, w.reshape(n, k // group, group))
    q = fake_quantize(w, group).reshape(n, k // group, group)
    return (torch.einsum("tgc,ngc->tng", xg, q) - ref).pow(2).mean(0)


def test_clipping_never_raises_a_groups_error_and_helps_heavy_tails():
    torch.manual_seed(0)
    w = torch.distributions.StudentT(2.0).sample((32, 128))  # heavy tails, as trained weights
    x = torch.randn(256, 128)
    fake = partial(fake_quantize, group_size=32)
    bound = search_clip(w, x, 32, fake)
    assert bound.shape == (32, 4)
    assert torch.all(bound <= w.reshape(32, 4, 32).abs().amax(-1) + 1e-6)
    before, after = _partial_error(w, x, 32), _partial_error(apply_clip(w, bound), x, 32)
    # The search's own loss: the clipped weight's quantized output against the original weight's.
    q_clip = fake_quantize(apply_clip(w, bound), 32).reshape(32, 4, 32)
    xg = x.reshape(-1, 4, 32)
    ref = torch.einsum("tgc,ngc->tng", xg, w.reshape(32, 4, 32))
    after = (torch.einsum("tgc,ngc->tng", xg, q_clip) - ref).pow(2).mean(0)
    assert torch.all(after <= before + 1e-5)
    assert after.sum() < 0.99 * before.sum()


def test_search_chunks_rows_the_same_as_one_pass(monkeypatch):
    import lmforge_quant_awq.search as search

    gen = torch.Generator().manual_seed(3)
    w, x = torch.randn(20, 64, generator=gen), torch.randn(40, 64, generator=gen)
    fake = partial(fake_quantize, group_size=32)
    whole = search_clip(w, x, 32, fake)
    monkeypatch.setattr(search, "_CHUNK_FLOATS", 2 * 40 * 3)  # 3 rows at a time
    torch.testing.assert_close(search_clip(w, x, 32, fake), whole)
