"""The calibration decoder computes what transformers computes, layer by layer from the host."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lite_models import save_tiny
from lmforge.lite.decoder import Rotary, decoder_layer, dense_projector, rms_norm
from lmforge.lite.host_model import HostModel
from lmforge.lite.layerwise import LayerwiseRunner
from lmforge.model.loader import load_model_info


def _logits(folder, ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    info = load_model_info(folder)
    model = HostModel.load(info)
    runner = LayerwiseRunner(model, ids, torch.device("cpu"), torch.float32, batch_size)
    for i in range(info.config.num_layers):
        runner.advance(runner.forward(runner.layer(i)))
    h = torch.cat(runner.hidden)
    head = model.globals.get("lm_head", model.globals["embed"])
    return F.linear(rms_norm(h, model.globals["norm"].float(), info.config.norm_eps), head.float())


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "llama_mha"])
def test_layerwise_logits_equal_transformers(tmp_path, arch):
    folder, hf_model = save_tiny(tmp_path, arch)
    ids = torch.randint(0, 256, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf_model(ids).logits
    torch.testing.assert_close(_logits(folder, ids, batch_size=2), expected, atol=1e-4, rtol=1e-4)


def test_projector_names_every_linear_of_a_layer(tmp_path):
    folder, _ = save_tiny(tmp_path, "llama")
    info = load_model_info(folder)
    layer = {k: v.float() for k, v in HostModel.load(info).layers[0].items()}
    seen = []
    dense = dense_projector(layer)

    def proj(name, x):
        seen.append(name)
        return dense(name, x)

    decoder_layer(info.config, layer, torch.randn(1, 5, info.config.hidden_size),
                  Rotary.build(info.config, 5, "cpu"), proj)
    assert seen == ["attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down"]
