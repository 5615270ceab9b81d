"""The one place that picks which implementation of each op the decoder runs.

:func:`get_ops` returns an :class:`Ops` table for a device. On CPU every op is the pure-PyTorch
one from :mod:`.reference` (mixtures of experts: :mod:`.reference_moe`; W8A8's quantized
inputs: :mod:`.quant_reference`). On CUDA, an op defined under the same name by any
``ops/triton_*.py`` module replaces the reference one (a module that cannot be imported, for
example without Triton, is skipped with a warning).
``LMFORGE_OPS=reference`` forces the reference ops everywhere, to compare the two paths.

Quantized (W8A8) linears take their input as 8-bit codes with one scale per token. The op that
produces that input (an RMSNorm) asks :meth:`Ops.input_quant_dtype` of its consumer and, where
it is a W8A8 linear, writes the codes itself (:class:`QuantizedActivation`), so the linear runs
no quantization kernel of its own: one launch fewer per such linear in every step.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from . import quant_reference, reference, reference_moe

logger = logging.getLogger(__name__)

OPS_ENV = "LMFORGE_OPS"


@dataclass(frozen=True)
class QuantizedActivation:
    """Activations quantized per token for a W8A8 linear: ``codes [T, K]`` (int8 or float8
    e4m3), their float32 ``scales [T]``, and ``dtype``, the float type they stand for (the
    linear's output type)."""

    codes: torch.Tensor
    scales: torch.Tensor
    dtype: torch.dtype


@dataclass(frozen=True)
class Ops:
    """The kernels of one device; signatures are those of the reference ops.

    Linear layers dispatch on their weight's kind (:mod:`lmforge.model.linear`): ``linear(x, w)``
    runs ``linear_<kind>``, and ``silu_mul_linear`` (the gated MLP's down projection) runs
    ``silu_mul_linear_<kind>``; ``act_mul_linear`` picks the gated MLP's activation. A
    :class:`QuantizedActivation` input goes straight to ``w8a8_linear``.
    """

    rms_norm: Callable
    rms_norm_quant: Callable
    silu_and_mul: Callable
    gelu_tanh_and_mul: Callable
    linear_dense: Callable
    linear_awq: Callable
    linear_w8a8: Callable
    w8a8_linear: Callable
    silu_mul_linear_dense: Callable
    silu_mul_linear_awq: Callable
    silu_mul_linear_w8a8: Callable
    rope_cos_sin: Callable
    rope_and_store_kv: Callable
    paged_decode_attention: Callable
    paged_prefill_attention: Callable
    moe_route: Callable
    fused_moe: Callable

    def linear(self, x: torch.Tensor | QuantizedActivation, w) -> torch.Tensor:
        if isinstance(x, QuantizedActivation):
            return self.w8a8_linear(x.codes, x.scales, w.weight, w.weight_scale, w.bias, x.dtype)
        return getattr(self, f"linear_{w.kind}")(x, w)

    def input_quant_dtype(self, w) -> torch.dtype | None:
        """The 8-bit type linear ``w`` quantizes its input to (a W8A8 weight's), so the op
        before it can write that input quantized; None for a linear that takes it as is."""
        return w.weight.dtype if w is not None and w.kind == "w8a8" else None

    def rms_norm_for(
        self, x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None,
        offset: float, consumer,
    ) -> tuple[torch.Tensor | QuantizedActivation, torch.Tensor | None]:
        """:func:`.reference.rms_norm` whose output feeds linear ``consumer`` (or None): where
        that is a W8A8 linear the norm's kernel also quantizes the rows for it and returns a
        :class:`QuantizedActivation` (the same codes the linear would compute)."""
        qdtype = self.input_quant_dtype(consumer)
        if qdtype is None or offset != 0.0:  # the fused kernel has no ``offset + w`` form
            return self.rms_norm(x, weight, eps, residual, offset)
        codes, scales, residual = self.rms_norm_quant(x, weight, eps, residual, qdtype)
        return QuantizedActivation(codes, scales, x.dtype), residual

    def silu_mul_linear(self, gate_up: torch.Tensor, w) -> torch.Tensor:
        return getattr(self, f"silu_mul_linear_{w.kind}")(gate_up, w)

    def act_mul_linear(self, gate_up: torch.Tensor, w, activation: str) -> torch.Tensor:
        """The gated MLP's down projection after ``activation`` ("silu" or "gelu_tanh")."""
        if activation == "silu":
            return self.silu_mul_linear(gate_up, w)
        return self.linear(self.gelu_tanh_and_mul(gate_up), w)


OP_NAMES = tuple(f.name for f in fields(Ops))
_cache: dict[str, Ops] = {}


def _triton_overrides() -> dict[str, Callable]:
    found: dict[str, Callable] = {}
    for module_info in pkgutil.iter_modules(__path__):
        if not module_info.name.startswith("triton_"):
            continue
        try:
            module = importlib.import_module(f"{__name__}.{module_info.name}")
        except Exception as exc:  # a missing or broken kernel falls back to the reference op
            logger.warning(
                "skipping kernels in %s: %s: %s", module_info.name, type(exc).__name__, exc
            )
            continue
        found.update({name: getattr(module, name) for name in OP_NAMES if hasattr(module, name)})
    return found


def build_ops(kernels: bool) -> Ops:
    """The reference ops, with every Triton kernel that imports in their place when
    ``kernels`` (what a CUDA device runs; under ``TRITON_INTERPRET=1`` the kernels run on the
    CPU, which is how the tests drive the whole decoder through them)."""
    modules = (reference, reference_moe, quant_reference)
    table = {name: next(getattr(m, name) for m in modules if hasattr(m, name))
             for name in OP_NAMES}
    if kernels:
        table.update(_triton_overrides())
    return Ops(**table)


def get_ops(device: torch.device | str) -> Ops:
    """The op table for ``device`` (cached per device type)."""
    kind = torch.device(device).type
    if os.environ.get(OPS_ENV) == "reference":
        kind = "cpu"
    if kind not in _cache:
        _cache[kind] = build_ops(kernels=kind == "cuda")
    return _cache[kind]
