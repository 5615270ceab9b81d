"""Folding scales keeps a layer's function; statistics and the scale search measure what they
say."""

from __future__ import annotations

import pytest
import torch
from lite_models import save_tiny
from lmforge.lite.calibrate import layer_stats
from lmforge.lite.decoder import Rotary, decoder_layer, dense_projector
from lmforge.lite.groups import fold_scales, group_input, scale_groups
from lmforge.lite.host_model import HostModel
from lmforge.lite.layerwise import LayerwiseRunner
from lmforge.lite.search import scaled_projector, search_scales
from lmforge.lite.stats import ChannelStats
from lmforge.model.loader import load_model_info


@pytest.fixture(scope="module", params=["llama", "llama_mha", "qwen2"])
def tiny_folder(request, tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny"), request.param)[0]


@pytest.fixture
def tiny(tiny_folder):
    model = HostModel.load(load_model_info(tiny_folder))
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    return LayerwiseRunner(model, ids, torch.device("cpu"), torch.float64, batch_size=2)


def test_folding_any_scales_keeps_the_layer_output(tiny):
    config = tiny.config
    layer = tiny.layer(0)
    h = next(tiny.batches())
    expected = decoder_layer(config, layer, h, tiny.rotary, dense_projector(layer))
    groups = scale_groups(config)
    assert [g.name for g in groups] == (
        ["attn_in", "o_in", "mlp_in", "down_in"] if config.num_kv_heads == config.num_heads
        else ["attn_in", "mlp_in", "down_in"])
    for group in groups:
        k = group_input(config, layer, group.name, h, tiny.rotary).shape[-1]
        fold_scales(layer, group, torch.rand(k, dtype=torch.float64) * 4 + 0.1)
    got = decoder_layer(config, layer, h, tiny.rotary, dense_projector(layer))
    torch.testing.assert_close(got, expected)


def test_layer_stats_are_absmax_and_absmean_over_every_token(tiny):
    layer = tiny.layer(0)
    stats, outputs = layer_stats(tiny, layer)
    inputs = torch.cat([group_input(tiny.config, layer, "down_in", h, tiny.rotary)
                        for h in tiny.batches()]).reshape(-1, tiny.config.intermediate_size)
    torch.testing.assert_close(stats["down_in"].absmax, inputs.abs().amax(0).float())
    torch.testing.assert_close(stats["down_in"].absmean, inputs.abs().mean(0).float())
    assert stats["down_in"].count == 64
    assert len(outputs) == 2 and outputs[0].shape == (2, 16, tiny.config.hidden_size)


def test_channel_stats_keep_evenly_spaced_rows_across_batches():
    stats = ChannelStats(sample_every=3, sample_limit=5)
    rows = torch.arange(40, dtype=torch.float32)[:, None].repeat(1, 2)
    for batch in rows.split(7):
        stats.update(batch)
    assert stats.sample[:, 0].tolist() == [0, 3, 6, 9, 12]


def test_the_search_prefers_scales_that_protect_an_outlier_channel(tiny):
    # Input channel 5 of q/k/v carries 50x larger activations: scaling it up before rounding the
    # weights to a coarse grid, and down in the norm, lowers the attention's error.
    layer = tiny.layer(0)
    layer["input_norm"][5] *= 50
    group = scale_groups(tiny.config)[0]
    k = tiny.config.hidden_size
    boost = torch.ones(k, dtype=torch.float64)
    boost[5] = 8.0

    def coarse(w):  # a 3-level grid per output row
        step = w.abs().amax(dim=1, keepdim=True) / 1
        return torch.round(w / step) * step

    candidates = [torch.ones(k, dtype=torch.float64), boost]
    best, losses = search_scales(tiny, layer, group, candidates,
                                 lambda s: scaled_projector(layer, group, s, coarse))
    assert best == 1 and losses[1] < losses[0]


def test_scaled_projector_is_exact_without_quantization(tiny):
    layer = tiny.layer(0)
    group = scale_groups(tiny.config)[-1]  # up -> down
    x = torch.randn(3, tiny.config.intermediate_size, dtype=torch.float64)
    s = torch.rand(tiny.config.intermediate_size, dtype=torch.float64) + 0.5
    proj = scaled_projector(layer, group, s, lambda w: w)
    torch.testing.assert_close(proj("mlp.down", x), dense_projector(layer)("mlp.down", x))


def test_rotary_tables_start_at_position_zero(tiny):
    rotary = Rotary.build(tiny.config, 4, "cpu")
    assert torch.equal(rotary.cos[0], torch.ones_like(rotary.cos[0]))
