"""Choose a group's input scales by trying each candidate on the real activations.

For each calibration batch the group's input ``x`` is computed once with the float weights; then
every candidate ``s`` runs the group's block with its linears replaced by what the quantizer
makes of ``x / s`` and ``W * s`` (see :func:`scaled_projector`). The candidate whose output is
closest to the float output (summed squared error) wins. The search looks at the first
:data:`SEARCH_TOKENS` tokens of the samples (whole samples, which are random windows of the
text): its cost no longer grows with ``--calib-samples`` past that, while the statistics that
make the candidates still cover every sample.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .decoder import LayerWeights, Projector, dense_projector
from .groups import ScaleGroup, group_input, group_output
from .layerwise import LayerwiseRunner

CACHE_BYTES = 1 << 30
SEARCH_TOKENS = 16384
# (scaled weight [N, K]) -> the weight the quantized model will use, in float.
WeightQuantizer = Callable[[torch.Tensor], torch.Tensor]
# (scaled input [..., K]) -> the input the quantized model will see (identity for weight-only).
ActQuantizer = Callable[[torch.Tensor], torch.Tensor]


def scaled_projector(
    layer: LayerWeights, group: ScaleGroup, scales: torch.Tensor,
    quantize_weight: WeightQuantizer, quantize_act: ActQuantizer | None = None,
) -> Projector:
    """Float projections, except the group's linears: ``act_q(x / s) @ w_q(W * s).T + b``."""
    dense = dense_projector(layer)
    weights = {}
    for name in group.linears:
        weight = layer[f"{name}.weight"]
        weights[name] = quantize_weight(weight * scales.to(weight.dtype)[None, :])
    inv = (1.0 / scales).to(next(iter(weights.values())).dtype)

    def proj(name: str, x: torch.Tensor) -> torch.Tensor:
        if name not in weights:
            return dense(name, x)
        x = x * inv
        if quantize_act is not None:
            x = quantize_act(x)
        return F.linear(x, weights[name], layer.get(f"{name}.bias"))

    return proj


def search_scales(
    runner: LayerwiseRunner, layer: LayerWeights, group: ScaleGroup,
    candidates: list[torch.Tensor], make_proj: Callable[[torch.Tensor], Projector],
    cache_bytes: int = CACHE_BYTES,
) -> tuple[int, list[float]]:
    """The index of the best candidate and every candidate's mean squared output error.

    Each candidate's quantized weights are made once and kept while all of them fit in
    ``cache_bytes``; past that (big layers) they are made again for every batch.
    """
    config, rotary = runner.config, runner.rotary
    losses = torch.zeros(len(candidates), dtype=torch.float64)
    count = 0
    reference = dense_projector(layer)
    weight_bytes = sum(layer[f"{n}.weight"].nbytes for n in group.linears)
    cached = [None] * len(candidates) if weight_bytes * len(candidates) <= cache_bytes else None
    for h in runner.batches(SEARCH_TOKENS):
        x = group_input(config, layer, group.name, h, rotary)
        target = group_output(config, group.name, x, rotary, reference)
        count += target.numel()
        for i, scales in enumerate(candidates):
            if cached is None:
                proj = make_proj(scales)
            else:
                proj = cached[i] = cached[i] or make_proj(scales)
            out = group_output(config, group.name, x, rotary, proj)
            losses[i] += (out - target).float().pow(2).sum().item()
    losses /= max(count, 1)
    return int(torch.argmin(losses)), losses.tolist()
