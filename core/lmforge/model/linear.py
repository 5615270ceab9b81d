"""Linear weights by kind: dense, AWQ group-wise int4, and W8A8 8-bit with per-channel scales.

The loader turns each linear module's checkpoint tensors into one of these; engines fuse them
(q, k and v into one qkv; gate and up into one gate_up) and run them through ops that dispatch on
``kind``. Each kind defines its numerics here through :meth:`LinearWeight.reference` (plain
PyTorch; the CPU path of the ``pytorch`` engine and the reference of every kernel).

AutoAWQ's GEMM layout: ``qweight`` int32 ``[K, N/8]`` holds 8 int4 values per int32; nibble ``i``
(bits ``4i..4i+3``) of column group ``c`` holds output column ``8c + AWQ_ORDER[i]``. ``qzeros``
int32 ``[K/G, N/8]`` is packed the same way and ``scales`` is ``[K/G, N]``; the weight is
``w[n, k] = (q[k, n] - z[k // G, n]) * s[k // G, n]``.

Tensor parallelism splits a linear along its outputs (column-parallel: each rank computes a slice
of the outputs) or its inputs (row-parallel: each rank computes a partial sum of every output).
Each kind's :attr:`LinearWeight.layout` says where its checkpoint tensors keep the two; loaders use
:func:`tensor_slice` to read one rank's part of a checkpoint tensor, and
:meth:`LinearWeight.shard` cuts a weight already in memory the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import torch

from ..errors import ModelLoadError

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
# Where column j of a group of 8 sits among the nibbles: the inverse of AWQ_ORDER.
_AWQ_NIBBLE_OF_COLUMN = tuple(AWQ_ORDER.index(j) for j in range(8))
FP8_DTYPE = torch.float8_e4m3fn
_FP8_MAX = 448.0

OUT: Literal["out"] = "out"  # column-parallel: a slice of the output features
IN: Literal["in"] = "in"  # row-parallel: a slice of the input features
# Where a checkpoint tensor keeps one dimension of the layer's features: (axis, features per
# index along it; "group" is the AWQ group size), or None when every part holds all of it.
Axis = tuple[int, int | str] | None


def pack_awq(values: torch.Tensor) -> torch.Tensor:
    """Pack int4 values ``[R, N]`` (0..15, N a multiple of 8) into AutoAWQ's int32 ``[R, N/8]``."""
    r, n = values.shape
    if n % 8 or values.min() < 0 or values.max() > 15:
        raise ValueError(f"AWQ packs values 0..15 in [R, N] with N a multiple of 8, got "
                         f"{tuple(values.shape)} in {int(values.min())}..{int(values.max())}")
    groups = values.to(torch.int64).reshape(r, n // 8, 8)
    packed = torch.zeros(r, n // 8, dtype=torch.int64, device=values.device)
    for nibble, column in enumerate(AWQ_ORDER):
        packed |= (groups[:, :, column] & 0xF) << (4 * nibble)
    # Reinterpret the low 32 bits as int32 (the checkpoint dtype).
    return torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)


def unpack_awq(packed: torch.Tensor) -> torch.Tensor:
    """The int4 values ``[R, 8 * C]`` (as int32, 0..15) of AutoAWQ-packed int32 ``[R, C]``."""
    shifts = torch.tensor([4 * _AWQ_NIBBLE_OF_COLUMN[j] for j in range(8)],
                          dtype=torch.int32, device=packed.device)
    values = (packed.unsqueeze(-1) >> shifts) & 0xF
    return values.reshape(packed.shape[0], -1)


class LinearWeight:
    """The weight of one linear layer ``y = x @ W.T (+ bias)``, of one storage kind."""

    kind: ClassVar[str]
    # The checkpoint tensors of this kind besides ``bias``, by their canonical suffix.
    params: ClassVar[tuple[str, ...]]
    # Each tensor's (output axis, input axis), bias included; see :data:`Axis`.
    layout: ClassVar[dict[str, tuple[Axis, Axis]]]
    bias: torch.Tensor | None

    @property
    def out_features(self) -> int:
        raise NotImplementedError

    @property
    def in_features(self) -> int:
        raise NotImplementedError

    def dequantize(self) -> torch.Tensor:
        """The weight as a float32 ``[out, in]`` matrix."""
        raise NotImplementedError

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor this weight holds (bias included)."""
        return [v for v in vars(self).values() if isinstance(v, torch.Tensor)]

    @property
    def nbytes(self) -> int:
        """What reading the whole weight costs, in bytes."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def to(self, device: torch.device | str, dtype: torch.dtype) -> LinearWeight:
        """On ``device``, for activations of ``dtype`` (quantized values keep their type)."""
        raise NotImplementedError

    @classmethod
    def fuse(cls, parts: list[LinearWeight]) -> LinearWeight:
        """One weight whose output features are the parts' outputs, in order (fused qkv)."""
        raise NotImplementedError

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T (+ bias)`` in plain PyTorch, in ``x``'s dtype, with this kind's numerics."""
        raise NotImplementedError

    def split_unit(self, dim: str) -> int:
        """The features along ``dim`` that a part must hold a multiple of (AWQ packs 8 outputs
        per int32 and scales its inputs by groups)."""
        group = getattr(self, "group_size", None)
        units = [_unit(axes[0 if dim == OUT else 1], group) for axes in self.layout.values()]
        return math.lcm(*(u for u in units if u))

    def shard(self, dim: str, index: int, count: int) -> LinearWeight:
        """Part ``index`` of ``count`` equal parts along ``dim``: :data:`OUT` keeps a slice of
        the outputs (and of the bias); :data:`IN` keeps a slice of the inputs, whose partial
        outputs the parts sum, so only part 0 keeps the bias."""
        features = self.out_features if dim == OUT else self.in_features
        start, stop = split_bounds(features, index, count, self.split_unit(dim))
        group = getattr(self, "group_size", None)
        changes: dict[str, torch.Tensor | None] = {}
        for param in (*self.params, "bias"):
            tensor = getattr(self, param)
            if tensor is None:
                continue
            part = tensor_slice(param, dim, start, stop, group)
            if part is None:
                changes[param] = None if param == "bias" and dim == IN and index else tensor
            else:
                axis, first, end = part
                changes[param] = tensor.narrow(axis, first, end - first).contiguous()
        return replace(self, **changes)

    def _bias_to(self, device, dtype) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.to(device=device, dtype=dtype)


def _cat_bias(parts: list[LinearWeight]) -> torch.Tensor | None:
    """The parts' biases end to end; a part without one contributes zeros."""
    given = next((p.bias for p in parts if p.bias is not None), None)
    if given is None:
        return None
    return torch.cat([p.bias if p.bias is not None else given.new_zeros(p.out_features)
                      for p in parts])


@dataclass
class DenseLinear(LinearWeight):
    """A plain ``[out, in]`` weight matrix."""

    kind: ClassVar[str] = "dense"
    params: ClassVar[tuple[str, ...]] = ("weight",)
    layout: ClassVar[dict[str, tuple[Axis, Axis]]] = {
        "weight": ((0, 1), (1, 1)), "bias": ((0, 1), None)}
    weight: torch.Tensor
    bias: torch.Tensor | None = None

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    def dequantize(self) -> torch.Tensor:
        return self.weight.float()

    def to(self, device, dtype) -> DenseLinear:
        return DenseLinear(self.weight.to(device=device, dtype=dtype), self._bias_to(device, dtype))

    @classmethod
    def fuse(cls, parts: list[DenseLinear]) -> DenseLinear:
        return DenseLinear(torch.cat([p.weight for p in parts]), _cat_bias(parts))

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight, self.bias)


@dataclass
class AWQLinear(LinearWeight):
    """Group-wise asymmetric int4 weights in AutoAWQ's GEMM layout (see the module docstring);
    activations stay 16-bit."""

    kind: ClassVar[str] = "awq"
    params: ClassVar[tuple[str, ...]] = ("qweight", "qzeros", "scales")
    layout: ClassVar[dict[str, tuple[Axis, Axis]]] = {
        "qweight": ((1, 8), (0, 1)), "qzeros": ((1, 8), (0, "group")),
        "scales": ((1, 1), (0, "group")), "bias": ((0, 1), None)}
    qweight: torch.Tensor  # int32 [K, N/8]
    qzeros: torch.Tensor  # int32 [K/G, N/8]
    scales: torch.Tensor  # [K/G, N]
    group_size: int
    bias: torch.Tensor | None = None

    def __post_init__(self) -> None:
        k, n8 = self.qweight.shape
        groups = -(-k // self.group_size)
        if self.qzeros.shape != (groups, n8) or self.scales.shape != (groups, 8 * n8):
            raise ModelLoadError(
                f"AWQ tensors do not fit together: qweight {tuple(self.qweight.shape)}, qzeros "
                f"{tuple(self.qzeros.shape)}, scales {tuple(self.scales.shape)} with group size "
                f"{self.group_size}."
            )

    @property
    def out_features(self) -> int:
        return self.scales.shape[1]

    @property
    def in_features(self) -> int:
        return self.qweight.shape[0]

    def dequantize(self) -> torch.Tensor:
        q = unpack_awq(self.qweight).float()  # [K, N]
        z = unpack_awq(self.qzeros).float().repeat_interleave(self.group_size, 0)[: q.shape[0]]
        s = self.scales.float().repeat_interleave(self.group_size, 0)[: q.shape[0]]
        return ((q - z) * s).t()

    def to(self, device, dtype) -> AWQLinear:
        return replace(self, qweight=self.qweight.to(device), qzeros=self.qzeros.to(device),
                       scales=self.scales.to(device=device, dtype=dtype),
                       bias=self._bias_to(device, dtype))

    @classmethod
    def fuse(cls, parts: list[AWQLinear]) -> AWQLinear:
        if len({p.group_size for p in parts}) != 1:
            raise ModelLoadError("AWQ layers fused together must share one group size.")
        return AWQLinear(torch.cat([p.qweight for p in parts], 1),
                         torch.cat([p.qzeros for p in parts], 1),
                         torch.cat([p.scales for p in parts], 1), parts[0].group_size,
                         _cat_bias(parts))

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dequantize().to(x.dtype)
        return torch.nn.functional.linear(x, w, self.bias)


@dataclass
class W8A8Linear(LinearWeight):
    """8-bit weights (int8 or fp8 e4m3) with one float32 scale per output channel; activations
    are quantized per token, dynamically and symmetrically, before an 8-bit matmul."""

    kind: ClassVar[str] = "w8a8"
    params: ClassVar[tuple[str, ...]] = ("weight", "weight_scale")
    layout: ClassVar[dict[str, tuple[Axis, Axis]]] = {
        "weight": ((0, 1), (1, 1)), "weight_scale": ((0, 1), None), "bias": ((0, 1), None)}
    weight: torch.Tensor  # int8 or float8_e4m3fn [N, K]
    weight_scale: torch.Tensor  # float32 [N]
    bias: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.weight.dtype not in (torch.int8, FP8_DTYPE):
            raise ModelLoadError(f"W8A8 weights must be int8 or float8_e4m3fn, not {self.weight.dtype}.")
        self.weight_scale = self.weight_scale.reshape(-1).float()
        if self.weight_scale.shape != (self.weight.shape[0],):
            raise ModelLoadError(
                f"A W8A8 weight {tuple(self.weight.shape)} needs one scale per output channel, "
                f"got {tuple(self.weight_scale.shape)}."
            )

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def is_fp8(self) -> bool:
        return self.weight.dtype == FP8_DTYPE

    def dequantize(self) -> torch.Tensor:
        return self.weight.float() * self.weight_scale[:, None]

    def to(self, device, dtype) -> W8A8Linear:
        return W8A8Linear(self.weight.to(device), self.weight_scale.to(device),
                          self._bias_to(device, dtype))

    @classmethod
    def fuse(cls, parts: list[W8A8Linear]) -> W8A8Linear:
        if len({p.weight.dtype for p in parts}) != 1:
            raise ModelLoadError("W8A8 layers fused together must share one weight dtype.")
        return W8A8Linear(torch.cat([p.weight for p in parts]),
                          torch.cat([p.weight_scale for p in parts]), _cat_bias(parts))

    def reference(self, x: torch.Tensor) -> torch.Tensor:
        xq, x_scale = quantize_per_token(x, self.weight.dtype)
        if self.is_fp8:
            acc = xq.float() @ self.weight.float().t()
        else:  # exact int32 accumulation, as the int8 tensor cores do
            acc = (xq.to(torch.int32) @ self.weight.to(torch.int32).t()).float()
        y = acc * x_scale[:, None] * self.weight_scale[None, :]
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype)


def quantize_per_token(x: torch.Tensor,
                       dtype: torch.dtype = torch.int8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row quantization of ``x [M, K]`` to int8 (absmax / 127, round half to even,
    clamp) or fp8 e4m3 (absmax / 448); returns the values and float32 scales ``[M]``."""
    xf = x.float()
    absmax = xf.abs().amax(dim=-1).clamp(min=1e-10)
    top = _FP8_MAX if dtype == FP8_DTYPE else 127.0
    # Tensor by tensor: torch divides a GPU tensor by a Python scalar through its reciprocal,
    # which rounds twice; the kernels' divisions are correctly rounded.
    scale = absmax / torch.full_like(absmax, top)
    scaled = xf / scale[:, None]
    if dtype == FP8_DTYPE:
        return scaled.clamp(-_FP8_MAX, _FP8_MAX).to(FP8_DTYPE), scale
    return scaled.round().clamp(-128, 127).to(torch.int8), scale


KINDS: dict[str, type[LinearWeight]] = {k.kind: k for k in (DenseLinear, AWQLinear, W8A8Linear)}
# Every kind's tensors by parameter name (``weight`` and ``bias`` lie alike in every kind).
_LAYOUTS: dict[str, tuple[Axis, Axis]] = {
    param: axes for kind in KINDS.values() for param, axes in kind.layout.items()}


def _unit(axis: Axis, group_size: int | None) -> int:
    if axis is None:
        return 0
    unit = axis[1]
    if unit == "group":
        if not group_size:
            raise ValueError("an AWQ tensor needs its group size")
        return group_size
    return unit


def split_bounds(features: int, index: int, count: int, unit: int = 1) -> tuple[int, int]:
    """The features ``[start, stop)`` of part ``index`` of ``count`` equal parts, each a
    multiple of ``unit`` features."""
    size, rest = divmod(features, count)
    if rest or size % unit:
        raise ModelLoadError(
            f"{features} features do not split into {count} equal parts of a multiple of "
            f"{unit}; use a tensor-parallel size that divides them."
        )
    return index * size, (index + 1) * size


def tensor_slice(param: str, dim: str, start: int, stop: int,
                 group_size: int | None = None) -> tuple[int, int, int] | None:
    """Where features ``[start, stop)`` along ``dim`` (:data:`OUT` or :data:`IN`) of a linear
    layer lie in its checkpoint tensor ``param``: ``(axis, first, end)`` in that tensor's own
    indices, or None when the tensor holds all of them (a bias or a per-channel scale along
    the inputs)."""
    if param not in _LAYOUTS:
        raise ModelLoadError(f"No linear weight kind has a tensor named {param!r}.")
    axis = _LAYOUTS[param][0 if dim == OUT else 1]
    if axis is None:
        return None
    unit = _unit(axis, group_size)
    if start % unit or stop % unit:
        raise ModelLoadError(
            f"The {param!r} tensor holds {unit} features per index; a part cannot start at "
            f"{start} or end at {stop}."
        )
    return axis[0], start // unit, stop // unit


def linear_from_parts(name: str, parts: dict[str, torch.Tensor],
                      group_size: int | None = None) -> LinearWeight:
    """The weight of linear module ``name`` from its checkpoint tensors, keyed by canonical
    suffix (``weight``, ``bias``, ``qweight``, ``qzeros``, ``scales``, ``weight_scale``)."""
    bias = parts.get("bias")
    if "qweight" in parts:
        if group_size is None:
            raise ModelLoadError(f"{name} holds AWQ tensors but config.json has no AWQ "
                                 "quantization_config.")
        missing = [p for p in AWQLinear.params if p not in parts]
        if missing:
            raise ModelLoadError(f"The AWQ layer {name} lacks its {missing[0]!r} tensor.")
        return AWQLinear(parts["qweight"], parts["qzeros"], parts["scales"], group_size, bias)
    if "weight" not in parts:
        raise ModelLoadError(f"The checkpoint lacks the weight of {name}.")
    weight = parts["weight"]
    if weight.dtype in (torch.int8, FP8_DTYPE):
        if "weight_scale" not in parts:
            raise ModelLoadError(f"The 8-bit layer {name} lacks its per-channel scales.")
        return W8A8Linear(weight, parts["weight_scale"], bias)
    return DenseLinear(weight, bias)
