"""Pure-PyTorch quantized linears: the CPU path and the reference of the W4A16 and W8A8 kernels.

W4A16 uses AutoAWQ's GEMM layout for a linear with ``K`` inputs and ``N`` outputs, group size
``G``: ``qweight`` int32 ``[K, N/8]`` and ``qzeros`` int32 ``[K/G, N/8]`` hold eight 4-bit values
per int32, nibble ``i`` (bits ``4i .. 4i+3``) holding column ``AWQ_ORDER[i]`` of its group of
eight columns; ``scales`` ``[K/G, N]`` are fp16 or bf16, and ``w[k, n] = (q[k, n] - z[k // G, n])
* s[k // G, n]``.

W8A8 keeps ``wq`` int8 or float8_e4m3fn ``[N, K]`` with a float32 scale per output channel; the
activations are quantized per token, dynamically and symmetrically (:func:`quantize_per_token`),
and the product ``xq @ wq.T`` is accumulated exactly (int32 for int8, fp32 for fp8) before the
per-token x per-channel scales and the bias are applied in fp32.
"""

from __future__ import annotations

import torch
from lmforge.model.linear import AWQ_ORDER, quantize_per_token
from lmforge.model.linear import pack_awq as awq_pack
from lmforge.model.linear import unpack_awq as awq_unpack

from . import reference

__all__ = ["AWQ_ORDER", "awq_pack", "awq_unpack", "quantize_per_token"]

# Largest magnitude of each W8A8 activation type: a row's absmax maps onto it.
QMAX = {torch.int8: 127.0, torch.float8_e4m3fn: 448.0}
# A row's absmax is at least this, so an all-zero row gets a finite scale and zero codes.
MIN_ABSMAX = 1e-10


def awq_dequantize(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The weight ``[K, N]`` in ``dtype`` (default: the scales' dtype). ``(q - z) * s`` is exact
    in fp32 (a small integer times a 16-bit float), so the result is rounded once."""
    q = awq_unpack(qweight)
    z = awq_unpack(qzeros).repeat_interleave(group_size, dim=0)
    s = scales.float().repeat_interleave(group_size, dim=0)
    return ((q - z).float() * s).to(dtype or scales.dtype)


def awq_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x[M, K] @ w[K, N] (+ bias)`` in ``x``'s dtype, ``w`` dequantized to ``x``'s dtype."""
    w = awq_dequantize(qweight, qzeros, scales, group_size, x.dtype)
    y = x @ w
    return y if bias is None else y + bias


def awq_silu_mul_linear(
    gate_up: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`reference.silu_and_mul` then :func:`awq_linear`: the gated MLP's down projection."""
    return awq_linear(reference.silu_and_mul(gate_up), qweight, qzeros, scales, group_size, bias)


def rms_norm_quant(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    dtype: torch.dtype = torch.int8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`reference.rms_norm` (with the residual add) then :func:`quantize_per_token`; returns
    the codes, their scales and the new residual (None without ``residual``)."""
    normed, residual = reference.rms_norm(x, weight, eps, residual)
    xq, scale = quantize_per_token(normed, dtype)
    return xq, scale, residual


def silu_mul_quant(
    gate_up: torch.Tensor, dtype: torch.dtype = torch.int8
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`reference.silu_and_mul` then :func:`quantize_per_token`."""
    return quantize_per_token(reference.silu_and_mul(gate_up), dtype)


def w8a8_linear(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """``(xq @ wq.T) * x_scale[:, None] * w_scale[None, :] (+ bias)`` in ``out_dtype``."""
    if wq.dtype == torch.int8:
        # float64 holds every int32 partial sum of int8 products exactly (|sum| < 2**53), so
        # this is int32 accumulation; the fp32 conversion rounds as the kernels' does.
        acc = (xq.double() @ wq.double().T).float()
    else:
        acc = xq.float() @ wq.float().T  # fp8 products are exact in fp32
    y = acc * x_scale.float()[:, None] * w_scale.float()[None, :]
    if bias is not None:
        y = y + bias.float()
    return y.to(out_dtype)


def w8a8_quant_linear(
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`quantize_per_token` of ``x`` to ``wq``'s type, then :func:`w8a8_linear` in ``x``'s
    dtype."""
    xq, x_scale = quantize_per_token(x, wq.dtype)
    return w8a8_linear(xq, x_scale, wq, w_scale, bias, x.dtype)


def w8a8_silu_mul_linear(
    gate_up: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`silu_mul_quant` then :func:`w8a8_linear`: the gated MLP's down projection."""
    return w8a8_quant_linear(reference.silu_and_mul(gate_up), wq, w_scale, bias)

