"""Group-wise int4 weights and AutoAWQ's GEMM packing.

A weight ``W [N, K]`` (out, in) is cut into groups of ``G`` input channels. Asymmetric (zero
point) quantization maps each group's ``[min, max]`` onto ``0..15``; symmetric maps ``±absmax``
onto ``-8..7`` and stores ``q + 8`` with zero point 8, so both dequantize as
``w = (q - z) * s``.

On disk (AutoAWQ ``version: gemm``): ``qweight`` int32 ``[K, N/8]``, ``qzeros`` int32
``[K/G, N/8]``, ``scales`` float16 ``[K/G, N]``. Each int32 holds 8 values of one row; nibble
``i`` (bits ``4i..4i+3``) holds column ``PACK_ORDER[i]`` of its group of 8 columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BITS = 4
PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
_MAX_Q = 2**BITS - 1


def group_params(
    w: torch.Tensor, group_size: int, zero_point: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales and zero points ``[N, K/G]`` (float32) of ``w [N, K]``."""
    n, k = w.shape
    g = w.float().reshape(n, k // group_size, group_size)
    if zero_point:
        hi, lo = g.amax(dim=-1), g.amin(dim=-1)
        scales = (hi - lo).clamp(min=1e-5) / _MAX_Q
        zeros = (-torch.round(lo / scales)).clamp(0, _MAX_Q)
    else:
        scales = g.abs().amax(dim=-1).clamp(min=1e-5) / (2 ** (BITS - 1) - 1)
        zeros = torch.full_like(scales, 2 ** (BITS - 1))
    return scales, zeros


def _quantize(w: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int):
    n, k = w.shape
    g = w.float().reshape(n, k // group_size, group_size)
    return torch.clamp(torch.round(g / scales[..., None]) + zeros[..., None], 0, _MAX_Q)


def fake_quantize(w: torch.Tensor, group_size: int, zero_point: bool = True) -> torch.Tensor:
    """``w`` rounded to its int4 grid and back, in ``w``'s dtype (what the searches compare):
    exactly what :func:`quantize_linear` writes, float16 scales included."""
    scales, zeros = group_params(w, group_size, zero_point)
    scales = scales.to(torch.float16).float()
    q = _quantize(w, scales, zeros, group_size)
    return ((q - zeros[..., None]) * scales[..., None]).reshape(w.shape).to(w.dtype)


@dataclass
class AwqTensors:
    """One linear in AutoAWQ's GEMM layout."""

    qweight: torch.Tensor  # int32 [K, N/8]
    qzeros: torch.Tensor  # int32 [K/G, N/8]
    scales: torch.Tensor  # float16 [K/G, N]

    @property
    def group_size(self) -> int:
        return self.qweight.shape[0] // self.scales.shape[0]

    def dequantize(self) -> torch.Tensor:
        """The float32 weight ``[N, K]`` these tensors stand for."""
        q, z = unpack(self.qweight).float(), unpack(self.qzeros).float()
        g = self.group_size
        w = (q - z.repeat_interleave(g, dim=0)) * self.scales.float().repeat_interleave(g, dim=0)
        return w.t().contiguous()


def quantize_linear(w: torch.Tensor, group_size: int, zero_point: bool = True) -> AwqTensors:
    """Quantize ``w [N, K]`` and pack it. The integers are computed against the float16
    scales that are stored, so dequantizing the file gives exactly the rounded weights."""
    scales, zeros = group_params(w, group_size, zero_point)
    scales16 = scales.to(torch.float16)
    q = _quantize(w, scales16.float(), zeros, group_size).reshape(w.shape)
    return AwqTensors(
        qweight=pack(q.t().to(torch.int32)),
        qzeros=pack(zeros.t().to(torch.int32)),
        scales=scales16.t().contiguous(),
    )


def pack(values: torch.Tensor) -> torch.Tensor:
    """``[R, N]`` integers in ``0..15`` -> int32 ``[R, N/8]`` in AutoAWQ's order."""
    r, n = values.shape
    v = values.to(torch.int64).reshape(r, n // 8, 8)[:, :, list(PACK_ORDER)]
    shifts = torch.arange(0, 32, BITS, dtype=torch.int64, device=values.device)
    packed = (v << shifts).sum(dim=-1)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)  # the int32 bit pattern
    return packed.to(torch.int32)


def unpack(packed: torch.Tensor) -> torch.Tensor:
    """int32 ``[R, N/8]`` -> ``[R, N]`` int32 values in ``0..15``."""
    r, n8 = packed.shape
    shifts = torch.arange(0, 32, BITS, dtype=torch.int32, device=packed.device)
    nibbles = (packed[:, :, None] >> shifts) & _MAX_Q
    values = torch.empty_like(nibbles)
    values[:, :, list(PACK_ORDER)] = nibbles
    return values.reshape(r, n8 * 8)
