"""Rotary embedding frequencies: parsed from HF configs once, computed the same way by every engine."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ModelLoadError
from .config import RopeConfig

SUPPORTED_SCALING = ("linear", "dynamic", "llama3", "longrope")
# Older names of the same scalings.
_ALIASES = {"su": "longrope"}


def rope_from_hf(hf: dict[str, Any], rope_scaling_factor: float = 0.0) -> RopeConfig:
    """The rope settings of an HF ``config.json``.

    Reads transformers-5 ``rope_parameters`` or the older ``rope_theta`` / ``rope_scaling`` pair.
    ``rope_scaling_factor > 0`` (LMDeploy's flag) turns on dynamic NTK scaling with that factor,
    overriding what the config says.
    """
    params = dict(hf.get("rope_parameters") or {})
    params.update(hf.get("rope_scaling") or {})
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    scaling = params.get("rope_type", params.get("type"))
    scaling = _ALIASES.get(scaling, scaling)
    if scaling == "default":
        scaling = None
    factor = float(params.get("factor", 1.0))
    if rope_scaling_factor > 0:
        scaling, factor = "dynamic", float(rope_scaling_factor)
    if scaling is not None and scaling not in SUPPORTED_SCALING:
        raise ModelLoadError(
            f"Rope scaling type {scaling!r} is not supported; supported types: "
            f"{', '.join(SUPPORTED_SCALING)}."
        )
    extra: dict[str, Any] = {}
    if scaling == "llama3":
        for key in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
            if key not in params:
                raise ModelLoadError(
                    f"Rope scaling 'llama3' needs {key!r} in the model's config.json."
                )
            extra[key] = params[key]
    elif scaling == "dynamic":
        # Dynamic NTK stretches relative to the context length the model was trained on.
        extra["original_max_position_embeddings"] = int(hf.get("max_position_embeddings", 2048))
    elif scaling == "longrope":
        factor, extra = _longrope(hf, params)
    return RopeConfig(theta=theta, scaling_type=scaling, factor=factor, extra=extra)


def _longrope(hf: dict[str, Any], params: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """LongRoPE's factor and fields, as transformers derives them: the pretraining length from
    the config's top level first (Phi-3 keeps it there), the factor from the two lengths when the
    config gives none, and cos/sin scaled by ``sqrt(1 + ln(factor) / ln(original))``."""
    for key in ("short_factor", "long_factor"):
        if key not in params:
            raise ModelLoadError(
                f"Rope scaling 'longrope' needs {key!r} in the model's config.json.")
    length = int(hf.get("max_position_embeddings", 4096))
    original = int(hf.get("original_max_position_embeddings")
                   or params.get("original_max_position_embeddings") or length)
    factor = float(params.get("factor") or length / original)
    attention = params.get("attention_factor")
    if attention is None:
        attention = math.sqrt(1 + math.log(factor) / math.log(original)) if factor > 1 else 1.0
    extra = {"short_factor": [float(f) for f in params["short_factor"]],
             "long_factor": [float(f) for f in params["long_factor"]],
             "original_max_position_embeddings": original, "attention_factor": float(attention)}
    return factor, extra


def rope_inv_freq(rope: RopeConfig, head_dim: int, seq_len: int | None = None) -> torch.Tensor:
    """Inverse frequencies ``[head_dim / 2]`` (float32, CPU) of the rotary embedding.

    ``seq_len`` matters only for dynamic NTK, whose base grows once a sequence is longer than the
    original context (transformers' semantics: ``seq_len`` is the current length, and lengths up
    to the original context use the plain frequencies). For longrope, ``seq_len`` past the
    original context picks the long factors, anything else the short ones.
    """
    base = rope.theta
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    if rope.scaling_type == "dynamic":
        original = rope.extra["original_max_position_embeddings"]
        length = max(seq_len or original, original)
        base = base * ((rope.factor * length / original) - (rope.factor - 1)) ** (
            head_dim / (head_dim - 2)
        )
    inv_freq = 1.0 / (base**exponents)
    if rope.scaling_type == "longrope":
        long = seq_len is not None and seq_len > rope.extra["original_max_position_embeddings"]
        factors = rope.extra["long_factor" if long else "short_factor"]
        if len(factors) != head_dim // 2:
            raise ModelLoadError(
                f"Rope scaling 'longrope' has {len(factors)} factors for a head dim of {head_dim}; "
                f"it needs {head_dim // 2}."
            )
        inv_freq = 1.0 / (torch.tensor(factors, dtype=torch.float32) * base**exponents)
    elif rope.scaling_type == "linear":
        inv_freq = inv_freq / rope.factor
    elif rope.scaling_type == "llama3":
        inv_freq = _llama3_scale(inv_freq, rope)
    return inv_freq


def rope_attention_factor(rope: RopeConfig) -> float:
    """What the cos and sin tables are multiplied by (longrope's attention factor; else 1)."""
    return float(rope.extra.get("attention_factor", 1.0))


def _llama3_scale(inv_freq: torch.Tensor, rope: RopeConfig) -> torch.Tensor:
    # Long wavelengths are divided by the factor, short ones kept, the band between interpolated.
    low, high = rope.extra["low_freq_factor"], rope.extra["high_freq_factor"]
    old_context = rope.extra["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_context / low, inv_freq / rope.factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
    medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
    return torch.where(medium, smoothed, scaled)
