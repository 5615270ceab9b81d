"""Per-token dynamic quantization of activations for W8A8, alone or fused with the op before it.

One program per token row holds the whole row in registers (up to 16K values, as the RMSNorm
kernel does), so the row is read once: it computes the row (``x``, ``rms_norm(x [+ residual])``
or ``silu(gate) * up``, rounded to the activation dtype exactly where the unfused ops round), its
absmax, and writes the codes and the row's scale. The arithmetic is that of
:func:`.quant_reference.quantize_per_token`: correctly rounded divisions (``div_rn``; Triton's
``/`` divides approximately on GPUs) and round-to-nearest-even.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .quant_reference import MIN_ABSMAX, QMAX
from .triton_common import expect, expect_dtype

_PLAIN = 0
_RMS = 1
_RMS_RESIDUAL = 2
_SILU_MUL = 3

# Adding and subtracting 1.5 * 2**23 rounds an fp32 of magnitude below 2**22 to the nearest
# integer, ties to even (the add's own rounding does it); no library call, so the interpreter
# runs it too.
_ROUNDER: tl.constexpr = tl.constexpr(12582912.0)
_MIN_ABSMAX: tl.constexpr = tl.constexpr(MIN_ABSMAX)

QUANT_DTYPES = (torch.int8, torch.float8_e4m3fn)


@triton.jit
def quantize_values(v, scale, IS_FP8: tl.constexpr):
    """Codes of the fp32 values ``v``: ``v / scale`` (correctly rounded) rounded to nearest
    even, as int8 (clamped to [-128, 127]) or float8 e4m3 (clamped to +-448)."""
    scaled = tl.math.div_rn(v, scale)
    if IS_FP8:
        codes = tl.clamp(scaled, -448.0, 448.0).to(tl.float8e4nv)
    else:
        codes = tl.clamp((scaled + _ROUNDER) - _ROUNDER, -128.0, 127.0).to(tl.int8)
    return codes


@triton.jit
def row_scale(absmax, QMAX_: tl.constexpr):
    """The scale of rows whose largest magnitude is ``absmax``: ``absmax / qmax``, correctly
    rounded (``absmax`` at least :data:`.quant_reference.MIN_ABSMAX`)."""
    return tl.math.div_rn(tl.maximum(absmax, _MIN_ABSMAX), QMAX_)


@triton.jit
def _quantize_rows_kernel(
    x_ptr, res_ptr, norm_ptr, xq_ptr, scale_ptr, res_out_ptr, eps,
    stride_x, stride_r, stride_q, stride_ro,
    HIDDEN: tl.constexpr,
    BLOCK: tl.constexpr,
    PROLOGUE: tl.constexpr,
    QMAX_: tl.constexpr,
    IS_FP8: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < HIDDEN
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    if PROLOGUE == 3:
        up = tl.load(x_ptr + row * stride_x + HIDDEN + offs, mask=mask, other=0.0)
        gate = x.to(tl.float32)
        silu = (gate * tl.sigmoid(gate)).to(up.dtype)
        x = (silu.to(tl.float32) * up.to(tl.float32)).to(up.dtype)
    elif PROLOGUE != 0:
        if PROLOGUE == 2:
            r = tl.load(res_ptr + row * stride_r + offs, mask=mask, other=0.0)
            x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
            tl.store(res_out_ptr + row * stride_ro + offs, x, mask=mask)
        xf = x.to(tl.float32)
        inv_rms = tl.rsqrt(tl.sum(xf * xf, 0) / HIDDEN + eps)
        # HF order: round the normalized row to the activation dtype, then scale by the weight.
        normed = (xf * inv_rms).to(x.dtype).to(tl.float32)
        g = tl.load(norm_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = (normed * g).to(x.dtype)
    v = x.to(tl.float32)
    scale = row_scale(tl.max(tl.abs(v), 0), QMAX_)
    tl.store(xq_ptr + row * stride_q + offs, quantize_values(v, scale, IS_FP8), mask=mask)
    tl.store(scale_ptr + row, scale)


def _quantize_rows(
    x: torch.Tensor,
    hidden: int,
    prologue: int,
    dtype: torch.dtype,
    weight: torch.Tensor | None = None,
    eps: float = 0.0,
    residual: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    expect(x.dim() == 2, f"x must be 2-D, got {tuple(x.shape)}.")
    expect_dtype("x", x)
    expect(dtype in QUANT_DTYPES, f"dtype must be torch.int8 or torch.float8_e4m3fn, not {dtype}.")
    x = x if x.stride(-1) == 1 else x.contiguous()
    tokens = x.shape[0]
    xq = torch.empty(tokens, hidden, dtype=dtype, device=x.device)
    scale = torch.empty(tokens, dtype=torch.float32, device=x.device)
    residual_out = torch.empty_like(x) if residual is not None else None
    if tokens == 0:
        return xq, scale, residual_out
    if residual is not None:
        residual = residual if residual.stride(-1) == 1 else residual.contiguous()
    block = triton.next_power_of_2(hidden)
    _quantize_rows_kernel[(tokens,)](
        x,
        residual if residual is not None else x,
        weight if weight is not None else x,
        xq,
        scale,
        residual_out if residual_out is not None else x,
        eps,
        x.stride(0),
        residual.stride(0) if residual is not None else 0,
        xq.stride(0),
        residual_out.stride(0) if residual_out is not None else 0,
        HIDDEN=hidden,
        BLOCK=block,
        PROLOGUE=prologue,
        QMAX_=QMAX[dtype],
        IS_FP8=dtype != torch.int8,
        # One warp per 1K values, at most 16 (as the RMSNorm kernel: no register spills).
        num_warps=min(max(block // 1024, 1), 16),
    )
    return xq, scale, residual_out


def quantize_per_token(
    x: torch.Tensor, dtype: torch.dtype = torch.int8
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of ``x: [M, K]`` quantized to ``dtype`` with its float32 scale ``[M]``, as
    :func:`.quant_reference.quantize_per_token`."""
    xq, scale, _ = _quantize_rows(x, x.shape[-1], _PLAIN, dtype)
    return xq, scale


def rms_norm_quant(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    dtype: torch.dtype = torch.int8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """RMSNorm of ``x`` (+ ``residual``) quantized per token: ``(codes, scales, new residual)``,
    as :func:`.quant_reference.rms_norm_quant`."""
    hidden = x.shape[-1]
    expect(weight.shape == (hidden,), f"weight must be [H={hidden}], got {tuple(weight.shape)}.")
    expect(residual is None or residual.shape == x.shape,
           f"residual must have x's shape {tuple(x.shape)}.")
    prologue = _RMS if residual is None else _RMS_RESIDUAL
    return _quantize_rows(x, hidden, prologue, dtype, weight.contiguous(), eps, residual)


def silu_mul_quant(
    gate_up: torch.Tensor, dtype: torch.dtype = torch.int8
) -> tuple[torch.Tensor, torch.Tensor]:
    """``silu(gate) * up`` of ``gate_up: [M, 2*I]`` quantized per token, as
    :func:`.quant_reference.silu_mul_quant`."""
    expect(gate_up.dim() == 2 and gate_up.shape[1] % 2 == 0,
           f"gate_up must be [M, 2*I], got {tuple(gate_up.shape)}.")
    xq, scale, _ = _quantize_rows(gate_up, gate_up.shape[1] // 2, _SILU_MUL, dtype)
    return xq, scale
