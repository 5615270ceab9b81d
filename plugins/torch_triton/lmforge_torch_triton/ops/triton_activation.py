"""The gated MLP activation ``silu(gate) * up`` on the fused gate/up projection output."""

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
def _silu_and_mul_kernel(
    x_ptr, out_ptr, stride_x, stride_o, INTER: tl.constexpr, BLOCK: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < INTER
    gate = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + INTER + offs, mask=mask, other=0.0)
    # The sigmoid in fp32 (no overflow for large |gate|); round silu(gate) to the input dtype
    # before the product, as the unfused `F.silu(gate) * up` does.
    silu = (gate * tl.sigmoid(gate)).to(up.dtype)
    out = silu.to(tl.float32) * up.to(tl.float32)
    tl.store(out_ptr + row * stride_o + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``silu(x[:, :I]) * x[:, I:]`` for ``x: [T, 2*I]``; returns ``[T, I]`` in ``x``'s dtype."""
    expect(x.dim() == 2 and x.shape[1] % 2 == 0, f"x must be [T, 2*I], got {tuple(x.shape)}.")
    expect_dtype("x", x)
    x = x if x.stride(-1) == 1 else x.contiguous()
    tokens, inter = x.shape[0], x.shape[1] // 2
    out = torch.empty(tokens, inter, dtype=x.dtype, device=x.device)
    if tokens == 0:
        return out
    block = min(_BLOCK, triton.next_power_of_2(inter))
    _silu_and_mul_kernel[(tokens, triton.cdiv(inter, block))](
        x,
        out,
        x.stride(0),
        out.stride(0),
        INTER=inter,
        BLOCK=block,
        num_warps=8 if block == _BLOCK else 4,
    )
    return out
