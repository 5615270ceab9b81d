"""8-bit numbers of W8A8: per-output-channel weights and per-token dynamic activations.

int8: ``scale = absmax / 127``, round, clamp to ``[-128, 127]``. fp8 (e4m3): ``scale =
absmax / 448``, clamp to ``±448`` and cast (the cast rounds to nearest). Weights carry one scale
per output channel; activations one per token, computed at run time.
"""

from __future__ import annotations

import torch

QUANT_DTYPES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}
# LMDeploy's config.json name of each dtype.
DTYPE_NAMES = {"int8": "int8", "fp8": "float8_e4m3fn"}


def qmax(dtype: torch.dtype) -> float:
    return 127.0 if dtype == torch.int8 else float(torch.finfo(dtype).max)


def _to_grid(x: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    y = x / scale
    if dtype == torch.int8:
        return torch.round(y).clamp(-128, 127).to(torch.int8)
    limit = qmax(dtype)
    return y.clamp(-limit, limit).to(dtype)


def quantize_weight(w: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``w [N, K]`` -> 8-bit weight ``[N, K]`` and float32 scale ``[N, 1]`` (LMDeploy's shapes)."""
    wf = w.float()
    scale = (wf.abs().amax(dim=1, keepdim=True) / qmax(dtype)).clamp(min=1e-12)
    return _to_grid(wf, scale, dtype), scale


def fake_quantize_weight(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``w`` through :func:`quantize_weight` and back, in ``w``'s dtype."""
    q, scale = quantize_weight(w, dtype)
    return (q.float() * scale).to(w.dtype)


def fake_quantize_tokens(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x [..., K]`` quantized per token (row) and back, as the engine does at run time."""
    xf = x.float()
    scale = (xf.abs().amax(dim=-1, keepdim=True) / qmax(dtype)).clamp(min=1e-12)
    return (_to_grid(xf, scale, dtype).float() * scale).to(x.dtype)
