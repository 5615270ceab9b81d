"""The gated MLP activations ``silu(gate) * up`` (SwiGLU) and ``gelu_tanh(gate) * up`` (GeGLU,
Gemma) on the fused gate/up projection output."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_common import expect, expect_dtype

# 1024 columns per program: 8 warps x 32 threads x 4 elements, so each thread issues one
# 8-byte (16-bit) or 16-byte (fp32) load per operand, and an [T, 14336] input still yields
# 14 programs per row to spread a small decode batch over an H100/H200's 132 SMs.
_BLOCK = 1024



@triton.jit
def gate_activation(gate, GELU: tl.constexpr):
    """SiLU, or GELU's tanh approximation, of fp32 ``gate``."""
    if GELU:
        # tanh(u) = 1 - 2 / (exp(2u) + 1) through exp2 (2 log2(e) = 2.885...), for
        # u = sqrt(2 / pi) * (x + 0.044715 x^3), clamped where tanh is +-1 in fp32 already.
        u = 0.7978845608028654 * (gate + 0.044715 * gate * gate * gate)
        u = tl.minimum(tl.maximum(u, -20.0), 20.0)
        return 0.5 * gate * (2.0 - 2.0 / (tl.exp2(2.8853900817779268 * u) + 1.0))
    # The sigmoid in fp32: no overflow for large |gate|.
    return gate * tl.sigmoid(gate)


@triton.jit
def _act_and_mul_kernel(
    x_ptr, out_ptr, stride_x, stride_o, INTER: tl.constexpr, BLOCK: tl.constexpr,
    GELU: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < INTER
    gate = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + INTER + offs, mask=mask, other=0.0)
    # Round act(gate) to the input dtype before the product, as the unfused
    # `F.silu(gate) * up` does.
    act = gate_activation(gate, GELU).to(up.dtype)
    out = act.to(tl.float32) * up.to(tl.float32)
    tl.store(out_ptr + row * stride_o + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``silu(x[:, :I]) * x[:, I:]`` for ``x: [T, 2*I]``; returns ``[T, I]`` in ``x``'s dtype."""
    return _act_and_mul(x, gelu=False)


def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``gelu_tanh(x[:, :I]) * x[:, I:]`` for ``x: [T, 2*I]``; returns ``[T, I]``."""
    return _act_and_mul(x, gelu=True)


def _act_and_mul(x: torch.Tensor, gelu: bool) -> torch.Tensor:
    expect(x.dim() == 2 and x.shape[1] % 2 == 0, f"x must be [T, 2*I], got {tuple(x.shape)}.")
    expect_dtype("x", x)
    x = x if x.stride(-1) == 1 else x.contiguous()
    tokens, inter = x.shape[0], x.shape[1] // 2
    out = torch.empty(tokens, inter, dtype=x.dtype, device=x.device)
    if tokens == 0:
        return out
    block = min(_BLOCK, triton.next_power_of_2(inter))
    _act_and_mul_kernel[(tokens, triton.cdiv(inter, block))](
        x,
        out,
        x.stride(0),
        out.stride(0),
        INTER=inter,
        BLOCK=block,
        GELU=gelu,
        num_warps=8 if block == _BLOCK else 4,
    )
    return out
