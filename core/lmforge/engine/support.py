"""Asks the chosen engine, before any weight loads, whether it has what a configuration and a
model need. Each engine declares its :class:`~lmforge.registry.EngineCapabilities`; the core
keeps no list of engines or features.

A setting or model the engine lacks is refused with one sentence that names the engine and the
setting and, where another installed engine has it, which one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import registry
from ..errors import ConfigError
from ..registry import EngineCapabilities, EngineSpec
from .settings import EngineSettings, device_kind


@dataclass(frozen=True)
class _Need:
    """One thing a configuration or model asks of an engine."""

    what: str  # how the message names it, e.g. "tp=2"
    has: Callable[[EngineCapabilities], bool]
    allowed: Callable[[EngineCapabilities], str]  # what the engine offers instead


def _values(values: tuple) -> str:
    return ", ".join(str(v) for v in values) or "none"


def _setting_needs(cfg: Any, settings: EngineSettings) -> list[_Need]:
    needs = []
    if settings.tp != 1:
        needs.append(_Need(f"tp={settings.tp}", lambda c: settings.tp in c.tp,
                           lambda c: f"tp {_values(c.tp)}"))
    if settings.quant_policy != 0:
        q = settings.quant_policy
        needs.append(_Need(f"quant_policy={q} (KV cache quantization)",
                           lambda c: q in c.kv_quant_policies,
                           lambda c: f"quant_policy {_values(c.kv_quant_policies)}"))
    if settings.dtype != "auto":
        d = settings.dtype
        needs.append(_Need(f"dtype={d}", lambda c: d in c.dtypes,
                           lambda c: f"dtype {_values(c.dtypes)}"))
    if getattr(cfg, "adapters", None):
        needs.append(_Need("LoRA adapters (adapters=...)", lambda c: c.adapters,
                           lambda c: "no adapters"))
    fmt = getattr(cfg, "model_format", None)
    if fmt not in (None, "hf"):
        needs.append(_Need(f"model_format={fmt}", lambda c: fmt in c.model_formats,
                           lambda c: f"model_format {_values(c.model_formats)}"))
    eviction = getattr(cfg, "eviction_type", "recompute")
    if eviction != "recompute":
        needs.append(_Need(f"eviction_type={eviction}", lambda c: eviction in c.eviction_types,
                           lambda c: f"eviction_type {_values(c.eviction_types)}"))
    if getattr(cfg, "num_cpu_blocks", 0):  # host swap space: only eviction by copy uses it
        needs.append(_Need("num_cpu_blocks (swap space for eviction_type=copy)",
                           lambda c: "copy" in c.eviction_types,
                           lambda c: f"eviction_type {_values(c.eviction_types)}"))
    if getattr(cfg, "use_logn_attn", False):
        needs.append(_Need("use_logn_attn", lambda c: c.logn_attn, lambda c: "no logn attention"))
    return needs


def _device_need(settings: EngineSettings) -> _Need:
    kind = device_kind(settings.device)
    if settings.device != "auto":
        return _Need(f"device={settings.device}", lambda c: kind in c.devices,
                     lambda c: f"device {_values(c.devices)}")
    return _Need("a CPU (no CUDA GPU is visible)" if kind == "cpu" else "a CUDA GPU",
                 lambda c: kind in c.devices, lambda c: f"device {_values(c.devices)}")


def _model_needs(info: Any) -> list[_Need]:
    needs = [_Need(f"{info.format} weights", lambda c: info.format in c.weight_formats,
                   lambda c: f"weights in {_values(c.weight_formats)}")]
    quant = getattr(info, "quant", None)
    if quant is not None:
        needs.append(_Need(f"{quant.describe()} checkpoints",
                           lambda c: quant.method in c.quant_methods,
                           lambda c: f"quantized checkpoints {_values(c.quant_methods)}"))
    return needs


def _refuse(spec: EngineSpec, need: _Need, has_it: Callable[[EngineSpec], bool]) -> ConfigError:
    others = [name for name, other in registry.engines().items()
              if name != spec.name and has_it(other)]
    where = (f"; the {others[0]} engine does (--backend {others[0]})" if others
             else f"; it supports {need.allowed(spec.capabilities)}")
    return ConfigError(f"The {spec.name} engine does not support {need.what}{where}.")


def check_settings(spec: EngineSpec, cfg: Any) -> None:
    """Refuse a configuration the engine cannot honour (before the model is even read)."""
    settings = EngineSettings.from_config(cfg)
    for need in [*_setting_needs(cfg, settings), _device_need(settings)]:
        if not need.has(spec.capabilities):
            raise _refuse(spec, need, lambda other, n=need: n.has(other.capabilities))


def check_model(spec: EngineSpec, info: Any, cfg: Any) -> None:
    """Refuse a model the engine cannot run: its architecture, weight files, quantization, and
    whatever the engine's own ``is_supported`` checks. Reads the model's config only."""
    arch = info.architecture
    if not spec.runs_architecture(arch):
        runs = registry.engines_for(arch)
        where = f"; the {runs[0]} engine does (--backend {runs[0]})" if runs else (
            f"; it runs {_values(spec.capabilities.architectures)}")
        raise ConfigError(f"The {spec.name} engine does not run the {arch} architecture{where}.")
    for need in _model_needs(info):
        if not need.has(spec.capabilities):
            raise _refuse(spec, need, lambda other, n=need: n.has(other.capabilities))
    if spec.is_supported is not None:
        ok, reason = spec.is_supported(info, cfg)
        if not ok:
            raise ConfigError(f"The {spec.name} engine cannot run this model: {reason}.")
