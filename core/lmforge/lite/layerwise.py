"""Run calibration samples through a model one decoder layer at a time.

The model stays in host memory; one layer's weights and one batch of hidden states at a time
go to the device. The hidden states between layers (``samples x seqlen x hidden``) are kept on
the host, so device memory holds a layer and a batch whatever the model's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from .decoder import LayerWeights, Projector, Rotary, decoder_layer, dense_projector
from .host_model import HostModel


class LayerwiseRunner:
    """Hidden states of the samples at the current layer, and the passes over them."""

    def __init__(
        self, model: HostModel, samples: torch.Tensor, device: torch.device, dtype: torch.dtype,
        batch_size: int = 1,
    ) -> None:
        self.model = model
        self.config = model.info.config
        self.device, self.dtype = device, dtype
        self.rotary = Rotary.build(self.config, samples.shape[1], device)
        embed = model.globals["embed"]
        self.hidden = [
            F.embedding(batch, embed).to(dtype) for batch in samples.split(max(batch_size, 1))
        ]
        self.tokens = samples.numel()

    def layer(self, index: int) -> LayerWeights:
        """Layer ``index`` on the device, in the compute dtype."""
        return self.model.layer(index, self.device, self.dtype)

    def batches(self, max_tokens: int | None = None) -> Iterator[torch.Tensor]:
        """The current layer's input, one batch at a time on the device; with ``max_tokens``,
        only the first batches that hold that many tokens."""
        seen = 0
        for h in self.hidden:
            if max_tokens is not None and seen >= max_tokens:
                return
            seen += h.shape[0] * h.shape[1]
            yield h.to(self.device, non_blocking=True)

    def forward(
        self, layer: LayerWeights, make_proj: Callable[[LayerWeights], Projector] = dense_projector
    ) -> list[torch.Tensor]:
        """The layer's output for every batch, on the host (the input is kept)."""
        proj = make_proj(layer)
        return [
            decoder_layer(self.config, layer, h, self.rotary, proj).to("cpu")
            for h in self.batches()
        ]

    def advance(self, outputs: list[torch.Tensor]) -> None:
        """Make ``outputs`` the next layer's input."""
        self.hidden = outputs
