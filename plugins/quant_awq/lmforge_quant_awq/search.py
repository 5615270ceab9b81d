"""AWQ's two searches: per-channel input scales on a grid, then per-group weight clipping.

Scales: for ``r`` in ``0, 1/20, ..., 19/20``, llm-awq's ``s = mean|x| ^ r`` and AutoAWQ's
``s = mean|x| ^ r / mean|ŵ| ^ (1 - r)`` (``ŵ``: the group's weights, each divided by its
quantization group's largest magnitude), normalized so that ``sqrt(max(s) * min(s)) = 1``;
``r = 0`` of the first kind is plain round-to-nearest. The block's output with ``x / s`` and the
quantized ``W * s`` decides (:func:`lmforge.lite.search.search_scales`).

Clipping (AutoAWQ): for each output channel and group, shrink the range ``±max|w|`` by
``0, 5, ..., 45 %`` and keep the one whose group partial output ``x_g @ w_g`` on a sample of
calibration tokens changes least once quantized. q and k are left out: their error passes
through the softmax, which the per-linear error does not see.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

N_GRID = 20
MAX_SHRINK = 0.5
CLIP_SKIP = ("attn.q", "attn.k")
# Floats a clip-search chunk may hold at once ([groups, tokens, rows]), about 256 MiB.
_CHUNK_FLOATS = 1 << 26


def weight_mean(weights: list[torch.Tensor], group_size: int) -> torch.Tensor:
    """``mean|ŵ|`` per input channel of the group's weights ``[N_i, K]`` (AutoAWQ's ``w_mean``)."""
    w = torch.cat([w.float() for w in weights])
    g = w.abs().reshape(w.shape[0], -1, group_size)
    return (g / g.amax(dim=-1, keepdim=True).clamp(min=1e-8)).reshape(w.shape).mean(dim=0)


def scale_candidates(
    x_mean: torch.Tensor, search: bool, w_mean: torch.Tensor | None = None, n_grid: int = N_GRID
) -> list[torch.Tensor]:
    """The scales to try for one group: both grids (the second only with ``w_mean``), or only
    ``mean|x| ^ 0.5`` without the search."""
    x_mean = x_mean.float()
    ratios = [i / n_grid for i in range(n_grid)] if search else [0.5]
    raw = [x_mean.pow(r) for r in ratios]
    if search and w_mean is not None:
        raw += [x_mean.pow(r) / (w_mean.float().pow(1 - r) + 1e-4) for r in ratios]
    candidates = []
    for s in raw:
        s = s.clamp(min=1e-4)
        candidates.append(s / (s.max() * s.min()).sqrt())
    return candidates


def search_clip(
    w: torch.Tensor, x: torch.Tensor, group_size: int,
    fake_quantize: Callable[[torch.Tensor], torch.Tensor], n_grid: int = N_GRID,
    max_shrink: float = MAX_SHRINK,
) -> torch.Tensor:
    """The best clipping bound ``[N, K/G]`` of ``w [N, K]`` for input rows ``x [T, K]``."""
    n, k = w.shape
    groups = k // group_size
    w = w.float().reshape(n, groups, group_size)
    xg = x.float().reshape(-1, groups, group_size).transpose(0, 1)  # [groups, T, G]
    rows = max(1, _CHUNK_FLOATS // (groups * xg.shape[1]))
    best = torch.empty(n, groups, device=w.device)
    for start in range(0, n, rows):
        chunk = w[start:start + rows]  # [r, groups, G]
        target = xg @ chunk.permute(1, 2, 0)  # [groups, T, r]
        bound = chunk.abs().amax(dim=-1)  # [r, groups]
        chosen, least = bound.clone(), torch.full_like(bound, float("inf"))
        for i in range(int(max_shrink * n_grid)):
            limit = bound * (1 - i / n_grid)
            clipped = torch.maximum(torch.minimum(chunk, limit[..., None]), -limit[..., None])
            q = fake_quantize(clipped.reshape(-1, k)).float().reshape(-1, groups, group_size)
            err = (xg @ q.permute(1, 2, 0) - target).pow(2).mean(dim=1).t()  # [r, groups]
            better = err < least
            least = torch.where(better, err, least)
            chosen = torch.where(better, limit, chosen)
        best[start:start + rows] = chosen
    return best


def apply_clip(w: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    """``w [N, K]`` clamped to ``±bound [N, K/G]`` per group."""
    n, k = w.shape
    g = w.reshape(n, bound.shape[1], -1)
    limit = bound.to(w.dtype)[..., None]
    return torch.maximum(torch.minimum(g, limit), -limit).reshape(n, k)
