"""RMSNorm, optionally fused with the residual add that precedes it in every decoder layer.

One program per token row holds the whole hidden vector in registers (hidden sizes up to 16K),
so the row is read once, summed, normalized and written once: the fused form replaces an add,
a copy of the residual and a norm (five passes over the activations) with one read of ``x`` and
``residual`` and one write of each result. Gemma's form (scale by ``offset + weight`` in fp32,
then cast) is a constexpr branch, so the Llama form compiles as it was.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_common import expect, expect_dtype


@triton.jit
def _rms_norm_kernel(
    x_ptr,
    residual_ptr,
    weight_ptr,
    out_ptr,
    residual_out_ptr,
    eps,
    offset,
    stride_x,
    stride_r,
    stride_o,
    stride_ro,
    HIDDEN: tl.constexpr,
    BLOCK: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    HAS_OFFSET: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < HIDDEN
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        # Add in fp32 and round the sum to the activation dtype before normalizing, exactly as
        # the unfused `x + residual` does, so the returned residual and the norm input agree.
        residual = tl.load(residual_ptr + row * stride_r + offs, mask=mask, other=0.0)
        x = (x.to(tl.float32) + residual.to(tl.float32)).to(x.dtype)
        tl.store(residual_out_ptr + row * stride_ro + offs, x, mask=mask)
    xf = x.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(xf * xf, 0) / HIDDEN + eps)
    weight = tl.load(weight_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_OFFSET:
        out = (xf * inv_rms) * (offset + weight)
    else:
        # HF order: cast the normalized row back to the activation dtype, then scale by the weight.
        out = (xf * inv_rms).to(x.dtype).to(tl.float32) * weight
    tl.store(out_ptr + row * stride_o + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None,
    offset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RMSNorm of ``x: [T, H]``; with ``residual``, normalizes ``x + residual`` and returns that sum
    as the new residual; with ``offset``, scales by ``offset + weight``. Computes in float32,
    returns ``x``'s dtype."""
    expect(x.dim() == 2, f"x must be [T, H], got {tuple(x.shape)}.")
    expect_dtype("x", x)
    tokens, hidden = x.shape
    expect(weight.shape == (hidden,), f"weight must be [H={hidden}], got {tuple(weight.shape)}.")
    if residual is not None:
        expect(
            residual.shape == x.shape,
            f"residual {tuple(residual.shape)} must have x's shape {tuple(x.shape)}.",
        )
        residual = residual if residual.stride(-1) == 1 else residual.contiguous()
    x = x if x.stride(-1) == 1 else x.contiguous()
    weight = weight.contiguous()
    out = torch.empty_like(x)
    residual_out = torch.empty_like(x) if residual is not None else None
    if tokens == 0:
        return out, residual_out
    block = triton.next_power_of_2(hidden)
    _rms_norm_kernel[(tokens,)](
        x,
        residual if residual is not None else x,
        weight,
        out,
        residual_out if residual_out is not None else out,
        eps,
        offset,
        x.stride(0),
        residual.stride(0) if residual is not None else 0,
        out.stride(0),
        residual_out.stride(0) if residual_out is not None else 0,
        HIDDEN=hidden,
        BLOCK=block,
        HAS_RESIDUAL=residual is not None,
        HAS_OFFSET=offset != 0.0,
        # One warp per 1K elements (8 per thread for 16-bit 128-bit loads), at most 16 warps:
        # 4 warps for hidden 4096, 8 for 8192, without register spills.
        num_warps=min(max(block // 1024, 1), 16),
    )
    return out, residual_out
