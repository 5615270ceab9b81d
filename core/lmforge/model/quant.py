"""How a checkpoint's weights were quantized, read from its ``config.json``.

Quantized checkpoints say so in ``quantization_config``; nothing is inferred from names. Three
producers are understood:

- AutoAWQ (and ``lmforge lite auto_awq``): ``{"quant_method": "awq", "bits": 4, "group_size":
  128, "zero_point": true, "version": "gemm"}``. Tensors ``qweight`` (int32 ``[in, out/8]``),
  ``qzeros`` (int32 ``[in/g, out/8]``) and ``scales`` (``[in/g, out]``) per linear.
- LMDeploy's ``lite smooth_quant``: ``{"quant_method": "smooth_quant", "quant_dtype": "int8" |
  "float8_e4m3fn"}``. Tensors ``weight`` (int8 / fp8 ``[out, in]``) and ``scale`` (float32
  ``[out, 1]``); activations are quantized per token at run time.
- compressed-tensors (llm-compressor; what vLLM and SGLang load): ``{"quant_method":
  "compressed-tensors", "config_groups": {...}}`` whose weights are 8-bit, symmetric, per
  channel and whose input activations are 8-bit, dynamic, per token. Tensors ``weight`` and
  ``weight_scale`` (``[out, 1]``).

Both W8A8 producers become the method ``"w8a8"``. Any other scheme is refused with one sentence,
never loaded as garbage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelLoadError

# quant_dtype / compressed-tensors type -> our dtype name
_W8A8_DTYPES = {"int8": "int8", "float8_e4m3fn": "fp8_e4m3", "fp8": "fp8_e4m3",
                "float": "fp8_e4m3", "int": "int8"}


@dataclass(frozen=True)
class QuantConfig:
    """A checkpoint's quantization, in the engine's terms.

    ``method``: ``"awq"`` (group-wise int4 weights, 16-bit activations) or ``"w8a8"`` (8-bit
    per-channel weights, 8-bit per-token dynamic activations). ``dtype``: ``"int4"``,
    ``"int8"`` or ``"fp8_e4m3"``. ``skip``: module name fragments left unquantized.
    """

    method: str
    dtype: str
    bits: int
    group_size: int | None = None
    zero_point: bool = False
    source: str = ""  # the checkpoint's own quant_method
    skip: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def describe(self) -> str:
        if self.method == "awq":
            return f"AWQ int4 (group size {self.group_size})"
        return f"W8A8 {self.dtype}"

    def quantizes(self, module: str) -> bool:
        """Whether the linear ``module`` (an HF module name) is stored quantized. ``skip``
        entries are name fragments, or regular expressions written ``re:PATTERN``."""
        return not any(re.search(p[3:], module) if p.startswith("re:") else p in module
                       for p in self.skip)


def _fail(source: str, what: str) -> ModelLoadError:
    return ModelLoadError(
        f"The checkpoint's quantization ({source}: {what}) is not supported; lmforge runs AWQ "
        "int4 (GEMM layout) and W8A8 int8/fp8 checkpoints."
    )


def _awq(q: dict[str, Any]) -> QuantConfig:
    bits = int(q.get("bits", q.get("w_bit", 4)))
    group = int(q.get("group_size", q.get("q_group_size", 128)))
    version = str(q.get("version", "gemm")).lower()
    if bits != 4:
        raise _fail("awq", f"{bits}-bit weights")
    if version != "gemm":
        raise _fail("awq", f"the {version} packing (re-export it with version gemm)")
    if group <= 0:
        raise _fail("awq", f"group size {group}")
    return QuantConfig("awq", "int4", 4, group, bool(q.get("zero_point", True)), "awq",
                       tuple(q.get("modules_to_not_convert") or ()), q)


def _smooth_quant(q: dict[str, Any]) -> QuantConfig:
    dtype = _W8A8_DTYPES.get(str(q.get("quant_dtype", "int8")))
    if dtype is None:
        raise _fail("smooth_quant", f"quant_dtype {q.get('quant_dtype')!r}")
    return QuantConfig("w8a8", dtype, 8, source="smooth_quant",
                       skip=tuple(q.get("modules_to_not_convert") or ()), raw=q)


def _compressed_tensors(q: dict[str, Any]) -> QuantConfig:
    groups = list((q.get("config_groups") or {}).values())
    if len(groups) != 1:
        raise _fail("compressed-tensors", f"{len(groups)} config groups")
    weights, acts = groups[0].get("weights") or {}, groups[0].get("input_activations") or {}
    wtype = weights.get("type", "int")
    checks = (
        (weights.get("num_bits") == 8, f"{weights.get('num_bits')}-bit weights"),
        (weights.get("strategy") == "channel", f"{weights.get('strategy')} weight scales"),
        (weights.get("symmetric", True), "asymmetric weights"),
        (acts.get("num_bits") == 8, "no 8-bit input activations"),
        (acts.get("strategy") == "token", f"{acts.get('strategy')} activation scales"),
        (bool(acts.get("dynamic")), "static activation scales"),
        (acts.get("type", wtype) == wtype, "weights and activations of different types"),
    )
    for ok, what in checks:
        if not ok:
            raise _fail("compressed-tensors", what)
    return QuantConfig("w8a8", _W8A8_DTYPES[wtype], 8, source="compressed-tensors",
                       skip=tuple(q.get("ignore") or ()), raw=q)


_READERS = {"awq": _awq, "smooth_quant": _smooth_quant,
            "compressed-tensors": _compressed_tensors}


def read_quant_config(hf_config: dict[str, Any]) -> QuantConfig | None:
    """The quantization an HF ``config.json`` records, or None for an unquantized model."""
    q = hf_config.get("quantization_config")
    if not q:
        return None
    method = str(q.get("quant_method", "")).lower()
    reader = _READERS.get(method)
    if reader is None:
        raise _fail(method or "unnamed", "an unknown method")
    return reader(q)
