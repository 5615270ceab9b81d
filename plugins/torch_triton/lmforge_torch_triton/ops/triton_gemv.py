"""Bandwidth-bound GEMV / skinny GEMM for decode steps, optionally with SiLU-and-mul fused in.

At a small batch every linear layer of a decode step is a read of its weight matrix: ``y[M, N] =
x[M, K] @ w[N, K].T`` with ``M`` a handful of token rows. One program owns ``BLOCK_N`` weight rows
and streams them along ``K`` in wide contiguous tiles, so the grid holds hundreds to thousands of
programs and every SM keeps many loads in flight. Two inner loops, chosen per shape by
:data:`CONFIGS`: for one row, an elementwise fp32 multiply-accumulate over a ``[BLOCK_N,
BLOCK_K]`` tile reduced once at the end; for several rows, ``tl.dot`` on a ``[16, BLOCK_K]``
input tile (padding rows load zeros). Shapes without a config, more than :data:`MAX_ROWS` rows,
or layouts the kernel does not take go to ``F.linear``.

The kernel can also rebuild its input as ``silu(gate) * up`` from the gated MLP's ``gate_up``
instead of reading a tensor the activation kernel wrote. Every program then repeats that work
for its rows, so :data:`SILU_CONFIGS` enables it only where it measured faster on an H200:
before the down projection at one row. (Fusing the RMSNorm the same way measured slower than
the norm kernel plus the GEMV at every shape, e.g. 20.0 us against 15.6 us on Llama-3-8B's QKV
at one row, so norms run as their own kernel.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from . import triton_activation
from .triton_common import SUPPORTED_DTYPES, dot_precision, expect, input_tile, load_tile

# The largest row count the fused kernels take; more rows are a prefill-sized matmul that
# cuBLAS runs at full tensor-core rate.
MAX_ROWS = 16


@dataclass(frozen=True)
class GemvConfig:
    """Launch parameters of one shape class (see :func:`pick_config`)."""

    block_n: int  # weight rows per program
    block_k: int  # elements along K per loop step
    num_warps: int
    num_stages: int
    use_dot: bool  # tl.dot on a 16-row input tile rather than the elementwise loop


# Chosen with `scripts/bench_gemv.py --sweep` on an H200 (Llama-3-8B shapes, bf16, Triton 3.6).
# Keys: the row bucket ("1" or "many") and the shape class from :func:`_shape_class`; a missing
# key runs cuBLAS. One row: 4 weight rows x 2048 columns per step beat every other split for all
# five shapes (13.8, 9.9, 53.3, 28.2, 227 us for QKV, o, gate/up, down, LM head; cuBLAS 15.4,
# 13.2, 55.0, 31.2, 238). 2-16 rows: the tl.dot loop wins on o, down and the LM head (11.5 vs
# 13.0, 29.8 vs 31.4, 234 vs 239 us at 4 rows), ties on QKV and loses ~2 % on gate/up.
_ONE_ROW = GemvConfig(block_n=4, block_k=2048, num_warps=4, num_stages=1, use_dot=False)
CONFIGS: dict[tuple[str, str], GemvConfig] = {
    ("1", "narrow"): _ONE_ROW,
    ("1", "deep"): _ONE_ROW,
    ("1", "wide"): _ONE_ROW,
    ("1", "vocab"): _ONE_ROW,
    ("many", "narrow"): GemvConfig(block_n=32, block_k=128, num_warps=4, num_stages=5,
                                   use_dot=True),
    ("many", "deep"): GemvConfig(block_n=32, block_k=256, num_warps=4, num_stages=5,
                                 use_dot=True),
    ("many", "vocab"): GemvConfig(block_n=64, block_k=128, num_warps=4, num_stages=3,
                                  use_dot=True),
}

# Where computing SiLU-and-mul inside the GEMV beats its own kernel followed by the GEMV. Keys:
# row bucket, shape class. Measured on the H200: SiLU-and-mul + down at one row 28.9 us fused
# against 29.4 us split.
SILU_CONFIGS: dict[tuple[str, str], GemvConfig] = {
    ("1", "deep"): GemvConfig(block_n=8, block_k=1024, num_warps=4, num_stages=1, use_dot=False),
}


def _shape_class(n: int, k: int) -> str:
    """``vocab``: an LM head; ``wide``: enough output rows to fill the GPU many times over
    (gate/up); ``deep``: few output rows each with a long K (down); ``narrow``: the rest (QKV,
    o_proj)."""
    if n > 65536:
        return "vocab"
    if n > 16384:
        return "wide"
    return "deep" if k > 8192 else "narrow"


def _bucket(m: int) -> str:
    return "1" if m == 1 else "many"


def pick_config(m: int, n: int, k: int) -> GemvConfig | None:
    """The launch parameters for ``m`` rows of a ``[n, k]`` weight; None where cuBLAS is faster."""
    return CONFIGS.get((_bucket(m), _shape_class(n, k)))


def silu_config(m: int, n: int, k: int) -> GemvConfig | None:
    """The launch parameters of SiLU-and-mul fused into the GEMV, or None where the activation
    kernel followed by the GEMV is faster."""
    return SILU_CONFIGS.get((_bucket(m), _shape_class(n, k)))


@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr,
    M, N, K, stride_xm, stride_wn, stride_ym,
    SILU_MUL: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    USE_DOT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EVEN_X: tl.constexpr,
    EVEN_W: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = tl.arange(0, BLOCK_M)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    # int64: an LM head's N * K passes 2**31 elements for large vocabularies.
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn

    if USE_DOT:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        w_mask = (offs_n[:, None] < N) & (offs_k[None, :] < K)
        # Each weight byte is read once: let it leave the cache first.
        w = load_tile(w_rows + offs_k[None, :], w_mask, EVEN_W, "evict_first")
        x = input_tile(x_ptr, rows, offs_k, M, K, stride_xm, SILU_MUL, EVEN_X)
        if USE_DOT:
            # x holds values of w's dtype (rounded by the activation), so the cast is exact.
            acc = tl.dot(x.to(w.dtype), tl.trans(w), acc, input_precision=DOT_PRECISION)
        else:
            acc += w.to(tl.float32) * x  # x: [1, BLOCK_K], broadcast over the weight rows
    if USE_DOT:
        y = acc
    else:
        y = tl.sum(acc, 1)[None, :]
    if HAS_BIAS:
        y += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    y_mask = (rows[:, None] < M) & (offs_n[None, :] < N)
    tl.store(y_ptr + rows[:, None] * stride_ym + offs_n[None, :],
             y.to(y_ptr.dtype.element_ty), mask=y_mask)


def _suits(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, k: int) -> bool:
    """Whether the fused kernel takes these operands (else the op falls back)."""
    return (
        1 <= x.shape[0] <= MAX_ROWS
        and x.dtype == w.dtype
        and x.dtype in SUPPORTED_DTYPES
        and w.stride(1) == 1
        and k > 0
        and (bias is None or (bias.dtype == w.dtype and bias.is_contiguous()))
    )


def _check(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, k: int) -> None:
    expect(x.dim() == 2 and w.dim() == 2, f"x and w must be 2-D, got {tuple(x.shape)} and "
           f"{tuple(w.shape)}.")
    expect(w.shape[1] == k, f"w {tuple(w.shape)} must have K={k} columns to match x "
           f"{tuple(x.shape)}.")
    expect(bias is None or bias.shape == (w.shape[0],),
           f"bias must be [N={w.shape[0]}], got {None if bias is None else tuple(bias.shape)}.")


def _launch(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, k: int, silu_mul: bool,
            config: GemvConfig) -> torch.Tensor:
    x = x if x.stride(1) == 1 else x.contiguous()
    m, n = x.shape[0], w.shape[0]
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    block_m = max(16, triton.next_power_of_2(m)) if config.use_dot else 1
    min_block = 16 if config.use_dot else 1  # tl.dot needs 16 along every dimension
    block_n = min(config.block_n, max(min_block, triton.next_power_of_2(n)))
    block_k = min(config.block_k, max(16, triton.next_power_of_2(k)))
    _gemv_kernel[(triton.cdiv(n, block_n),)](
        x, w, bias if bias is not None else w, y,
        m, n, k, x.stride(0), w.stride(0), y.stride(0),
        SILU_MUL=silu_mul,
        HAS_BIAS=bias is not None,
        USE_DOT=config.use_dot,
        DOT_PRECISION=dot_precision(x.dtype),
        # Tiles that lie inside the tensors load without masks.
        EVEN_X=m == block_m and k % block_k == 0,
        EVEN_W=n % block_n == 0 and k % block_k == 0,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    return y


def linear_with_config(x: torch.Tensor, w: torch.Tensor, config: GemvConfig,
                       silu_mul: bool = False) -> torch.Tensor:
    """The kernel with explicit launch parameters, for any row count, optionally computing
    ``silu(gate) * up`` from ``x = [gate | up]`` first. The entry point of
    ``scripts/bench_gemv.py``, which picks :data:`CONFIGS` and :data:`SILU_CONFIGS`."""
    k = x.shape[1] // 2 if silu_mul else x.shape[1]
    _check(x, w, None, k)
    return _launch(x, w, None, k, silu_mul, config)


def linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x[M, K] @ w[N, K].T (+ bias)`` in ``x``'s dtype, accumulated in fp32."""
    _check(x, w, bias, x.shape[-1])
    config = pick_config(x.shape[0], w.shape[0], x.shape[1])
    if config is None or not _suits(x, w, bias, x.shape[1]):
        return F.linear(x, w, bias)
    return _launch(x, w, bias, x.shape[1], False, config)


def silu_mul_linear(
    gate_up: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``linear(silu(gate) * up, w, bias)`` for ``gate_up: [M, 2*I]`` and ``w: [N, I]``."""
    expect(gate_up.dim() == 2 and gate_up.shape[1] % 2 == 0,
           f"gate_up must be [M, 2*I], got {tuple(gate_up.shape)}.")
    inter = gate_up.shape[1] // 2
    _check(gate_up, w, bias, inter)
    config = silu_config(gate_up.shape[0], w.shape[0], inter)
    if config is None or not _suits(gate_up, w, bias, inter):
        return linear(triton_activation.silu_and_mul(gate_up), w, bias)
    return _launch(gate_up, w, bias, inter, True, config)


def linear_dense(x: torch.Tensor, w) -> torch.Tensor:
    """The op for a :class:`~lmforge.model.linear.DenseLinear`."""
    return linear(x, w.weight, w.bias)


def silu_mul_linear_dense(gate_up: torch.Tensor, w) -> torch.Tensor:
    """The gated MLP's down projection for a :class:`~lmforge.model.linear.DenseLinear`."""
    return silu_mul_linear(gate_up, w.weight, w.bias)
