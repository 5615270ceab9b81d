"""Engine settings whose feature is not built yet: each is refused with one plain sentence."""

from __future__ import annotations

from ..errors import ConfigError


def check_supported(cfg) -> None:
    """Raise :class:`ConfigError` for a setting lmforge cannot honour yet."""
    if getattr(cfg, "tp", 1) != 1:
        raise ConfigError("Tensor parallelism (tp > 1) is not available in lmforge yet; use tp=1.")
    if getattr(cfg, "quant_policy", 0) != 0:
        raise ConfigError(
            "KV cache quantization (quant_policy 4 or 8) is not available in lmforge yet; use 0."
        )
    if getattr(cfg, "adapters", None):
        raise ConfigError("LoRA adapters are not available in lmforge yet; remove --adapters.")
    fmt = getattr(cfg, "model_format", None)
    if fmt not in (None, "hf", "llama"):
        raise ConfigError(
            f"Model format {fmt!r} is not available in lmforge yet; use an HF or GGUF model."
        )
    if getattr(cfg, "use_logn_attn", False):
        raise ConfigError("use_logn_attn is not available in lmforge yet; leave it off.")
