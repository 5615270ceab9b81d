"""W4A16 matmuls on AutoAWQ's GEMM layout (see :mod:`.quant_reference` for the layout).

One kernel covers every row count. Each program owns an output tile and walks its slice of K in
``block_k`` rows that lie inside one quantization group, so the tile's zeros and scales are one
row each. It loads the packed words ``[block_k, block_n / 8]``, repeats each word for the eight
columns it holds, and turns nibble ``q`` into the float ``2**23 + q`` by OR-ing it into the
exponent bits of 2**23: subtracting ``2**23 + z`` (built the same way) gives ``q - z`` exactly,
with no int-to-float conversion (those run at a quarter of the FMA rate). Then:

- one row (``block_m == 1``): an elementwise fp32 multiply-accumulate into a ``[block_k,
  block_n]`` tile reduced once at the end; the packed weights stream at the memory rate;
- more rows: the tile is rounded to the activation dtype (exactly the reference's dequantized
  weight) and multiplied on the tensor cores with ``tl.dot``.

Small batches split K over several programs per tile (see :mod:`.triton_quant_common`). At
prefill sizes the weight is dequantized once into a bf16/fp16 matrix and cuBLAS multiplies it:
writing the 16-bit copy costs a few percent of an 8,192-row matmul, and cuBLAS beats any Triton
tile loop there. :data:`CONFIGS` and :data:`DEQUANT_MIN_ROWS` hold the choices.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import triton_activation
from .triton_common import dot_precision, expect
from .triton_gemv import _input_tile, shape_class
from .triton_quant_common import (
    LARGE,
    MatmulConfig,
    reduce_split_k,
    row_bucket,
    split_k_slices,
    split_k_workspace,
    tile_coords,
)

_PLAIN = 0  # x itself (the prologue codes of triton_gemv._input_tile)
_SILU_MUL = 3  # silu(x[:, :K]) * x[:, K:]

# From this many rows on, dequantize the weight and let cuBLAS multiply.
DEQUANT_MIN_ROWS = 1024

_ELEMENTWISE = dict(block_m=1, block_n=256, block_k=32, num_warps=4, num_stages=2)
# Keys: the row bucket (triton_quant_common.ROW_BUCKETS, LARGE past them) and the shape class.
# Split counts give every shape a few hundred programs at decode sizes (132 SMs on an H200).
CONFIGS: dict[tuple[int, str], MatmulConfig] = {
    (1, "narrow"): MatmulConfig(**_ELEMENTWISE, split_k=16),
    (1, "wide"): MatmulConfig(**_ELEMENTWISE, split_k=4),
    (1, "deep"): MatmulConfig(**_ELEMENTWISE, split_k=28),
    (1, "vocab"): MatmulConfig(**_ELEMENTWISE, split_k=1),
    (16, "narrow"): MatmulConfig(16, 128, 128, 8, 4, 3),
    (16, "wide"): MatmulConfig(16, 128, 128, 2, 4, 3),
    (16, "deep"): MatmulConfig(16, 128, 128, 16, 4, 3),
    (16, "vocab"): MatmulConfig(16, 128, 128, 1, 4, 3),
    (32, "narrow"): MatmulConfig(32, 128, 128, 8, 4, 3),
    (32, "wide"): MatmulConfig(32, 128, 128, 2, 4, 3),
    (32, "deep"): MatmulConfig(32, 128, 128, 16, 4, 3),
    (32, "vocab"): MatmulConfig(32, 128, 128, 1, 4, 3),
    (64, "narrow"): MatmulConfig(64, 128, 64, 4, 4, 4),
    (64, "wide"): MatmulConfig(64, 128, 64, 1, 4, 4),
    (64, "deep"): MatmulConfig(64, 128, 64, 8, 4, 4),
    (128, "narrow"): MatmulConfig(64, 128, 64, 2, 4, 4),
    (128, "wide"): MatmulConfig(64, 256, 64, 1, 8, 3),
    (128, "deep"): MatmulConfig(64, 128, 64, 4, 4, 4),
    (256, "narrow"): MatmulConfig(128, 128, 64, 1, 8, 3),
    (256, "wide"): MatmulConfig(128, 256, 64, 1, 8, 3),
    (256, "deep"): MatmulConfig(128, 128, 64, 2, 8, 3),
}
_DEFAULT_LARGE = MatmulConfig(128, 256, 64, 1, 8, 3)

# Where the decode MLP's silu(gate) * up runs inside the down projection rather than in its own
# kernel first. Keys as in CONFIGS.
FUSED_CONFIGS: dict[tuple[int, str], MatmulConfig] = {
    (1, "deep"): MatmulConfig(**_ELEMENTWISE, split_k=28),
}

# The bits of 2.0**23: OR-ing a nibble in gives the float 2**23 + nibble.
_MAGIC: tl.constexpr = tl.constexpr(0x4B000000)


def pick_config(m: int, n: int, k: int) -> MatmulConfig | None:
    """Launch parameters for ``m`` rows of a ``[k, n]`` weight; None where dequantizing once
    and running cuBLAS is faster."""
    if m >= DEQUANT_MIN_ROWS:
        return None
    bucket = row_bucket(m)
    cls = shape_class(n, k)
    return CONFIGS.get((bucket, cls)) or CONFIGS.get((LARGE, cls), _DEFAULT_LARGE)


@triton.jit
def _spread(words, BLOCK_N: tl.constexpr):
    """Each int32 of ``words`` (last dimension ``BLOCK_N // 8``) repeated for its 8 columns,
    and the shift of each column's nibble (``[BLOCK_N]``)."""
    words = tl.interleave(words, words)
    words = tl.interleave(words, words)
    words = tl.interleave(words, words)
    col = tl.arange(0, BLOCK_N) % 8
    # AutoAWQ puts column j of a group of eight in nibble j // 2 + 4 * (j % 2).
    return words, 4 * (col // 2 + 4 * (col % 2))


@triton.jit
def _weight_tile(
    qw_ptr, qz_ptr, s_ptr, offs_k, pid_n, group, N, stride_qk, stride_zg, stride_sg,
    EVEN_N: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Dequantized weights ``[len(offs_k), BLOCK_N]`` in fp32 (exact: ``(q - z) * s``) of the
    rows ``offs_k``, which all lie in quantization group ``group``, and column tile ``pid_n``."""
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = pid_n * (BLOCK_N // 8) + tl.arange(0, BLOCK_N // 8)
    w_ptrs = qw_ptr + offs_k.to(tl.int64)[:, None] * stride_qk + offs_c[None, :]
    z_ptrs = qz_ptr + group * stride_zg + offs_c
    s_ptrs = s_ptr + group * stride_sg + offs_n
    if EVEN_N:
        # Each packed byte is read once: let it leave the cache first.
        words = tl.load(w_ptrs, eviction_policy="evict_first")
        zwords = tl.load(z_ptrs)
        scales = tl.load(s_ptrs)
    else:
        c_mask = offs_c < N // 8
        words = tl.load(w_ptrs, mask=c_mask[None, :], other=0, eviction_policy="evict_first")
        zwords = tl.load(z_ptrs, mask=c_mask, other=0)
        scales = tl.load(s_ptrs, mask=offs_n < N, other=0.0)
    words, shifts = _spread(words, BLOCK_N)
    zwords, shifts = _spread(zwords, BLOCK_N)
    q = (((words >> shifts[None, :]) & 0xF) | _MAGIC).to(tl.float32, bitcast=True)
    z = (((zwords >> shifts) & 0xF) | _MAGIC).to(tl.float32, bitcast=True)
    return (q - z[None, :]) * scales.to(tl.float32)[None, :]


@triton.jit
def _awq_matmul_kernel(
    x_ptr, qw_ptr, qz_ptr, s_ptr, bias_ptr, y_ptr, ws_ptr, lock_ptr,
    M, N, K, group_size, split_k, k_per_split,
    stride_xm, stride_qk, stride_zg, stride_sg, stride_ym,
    PROLOGUE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    EVEN_M: tl.constexpr,
    EVEN_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid_m, pid_n = tile_coords(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    k_begin = tl.program_id(1) * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    if BLOCK_M == 1:
        acc = tl.zeros([BLOCK_K, BLOCK_N], dtype=tl.float32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        w = _weight_tile(qw_ptr, qz_ptr, s_ptr, offs_k, pid_n, k0 // group_size, N, stride_qk,
                         stride_zg, stride_sg, EVEN_N, BLOCK_N)
        x = _input_tile(x_ptr, x_ptr, x_ptr, rows, offs_k, 1.0, M, K, stride_xm, 0, PROLOGUE,
                        EVEN_M)
        if BLOCK_M == 1:
            acc += tl.reshape(x, (BLOCK_K, 1)) * w
        else:
            # x holds values of its own dtype (the prologue rounds), so the cast is exact.
            dtype = x_ptr.dtype.element_ty
            acc = tl.dot(x.to(dtype), w.to(dtype), acc, input_precision=DOT_PRECISION)
    if BLOCK_M == 1:
        y = tl.sum(acc, 0)[None, :]
    else:
        y = acc
    mask = (rows[:, None] < M) & (offs_n[None, :] < N)
    lock = lock_ptr + pid_m * tl.cdiv(N, BLOCK_N) + pid_n
    y, is_last = reduce_split_k(y, ws_ptr + rows[:, None] * N + offs_n[None, :], mask, lock,
                                split_k, SPLIT)
    if is_last:
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + rows[:, None] * stride_ym + offs_n[None, :],
                 y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _awq_dequantize_kernel(
    qw_ptr, qz_ptr, s_ptr, out_ptr, N, group_size, stride_qk, stride_zg, stride_sg, stride_ok,
    EVEN_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(1)
    offs_k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    w = _weight_tile(qw_ptr, qz_ptr, s_ptr, offs_k, pid_n, tl.program_id(0) * BLOCK_K //
                     group_size, N, stride_qk, stride_zg, stride_sg, EVEN_N, BLOCK_N)
    tl.store(out_ptr + offs_k.to(tl.int64)[:, None] * stride_ok + offs_n[None, :],
             w.to(out_ptr.dtype.element_ty), mask=offs_n[None, :] < N)


def _block_k(group_size: int, limit: int) -> int:
    """The largest power of two up to ``limit`` that divides the group size (so a block of K
    rows never straddles two groups)."""
    block = 1
    while block * 2 <= limit and group_size % (block * 2) == 0:
        block *= 2
    return block


def _check(x, qweight, qzeros, scales, group_size, bias, k) -> None:
    expect(x.dim() == 2, f"x must be [M, K], got {tuple(x.shape)}.")
    expect(qweight.dim() == 2 and qweight.dtype == torch.int32 and qweight.shape[0] == k,
           f"qweight must be int32 [K={k}, N/8], got {qweight.dtype} {tuple(qweight.shape)}.")
    n = qweight.shape[1] * 8
    expect(group_size > 0 and k % group_size == 0,
           f"group_size {group_size} must divide K={k}.")
    groups = k // group_size
    expect(qzeros.dtype == torch.int32 and qzeros.shape == (groups, n // 8),
           f"qzeros must be int32 [{groups}, {n // 8}], got {qzeros.dtype} "
           f"{tuple(qzeros.shape)}.")
    expect(scales.shape == (groups, n), f"scales must be [{groups}, {n}], got "
           f"{tuple(scales.shape)}.")
    expect(bias is None or bias.shape == (n,),
           f"bias must be [N={n}], got {None if bias is None else tuple(bias.shape)}.")


def _rows_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def awq_dequantize(
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The weight ``[K, N]`` in ``dtype`` (default: the scales' dtype), as
    :func:`.quant_reference.awq_dequantize` computes it."""
    k, n = qweight.shape[0], qweight.shape[1] * 8
    out = torch.empty(k, n, dtype=dtype or scales.dtype, device=qweight.device)
    block_k, block_n = _block_k(group_size, 32), min(256, triton.next_power_of_2(n))
    qweight, qzeros, scales = (_rows_contiguous(t) for t in (qweight, qzeros, scales))
    _awq_dequantize_kernel[(triton.cdiv(k, block_k), triton.cdiv(n, block_n))](
        qweight, qzeros, scales, out, n, group_size, qweight.stride(0), qzeros.stride(0),
        scales.stride(0), out.stride(0),
        EVEN_N=n % block_n == 0, BLOCK_K=block_k, BLOCK_N=block_n, num_warps=4,
    )
    return out


def launch(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None,
    config: MatmulConfig,
    silu_mul: bool = False,
) -> torch.Tensor:
    """The matmul kernel with explicit launch parameters (the entry point of
    ``scripts/bench_quant_linear.py``); with ``silu_mul``, ``x`` is ``[M, 2K]`` and the product
    is taken with ``silu(x[:, :K]) * x[:, K:]``."""
    x = _rows_contiguous(x)
    qweight, qzeros, scales = (_rows_contiguous(t) for t in (qweight, qzeros, scales))
    m, k, n = x.shape[0], qweight.shape[0], qweight.shape[1] * 8
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return y
    use_dot = config.block_m > 1
    block_m = max(config.block_m, 16) if use_dot else 1
    block_n = min(config.block_n, max(16 if use_dot else 8, triton.next_power_of_2(n)))
    block_k = _block_k(group_size, min(config.block_k, triton.next_power_of_2(k)))
    k_per_split, splits = split_k_slices(k, config.split_k, block_k)
    tiles = triton.cdiv(m, block_m) * triton.cdiv(n, block_n)
    ws, locks = split_k_workspace(x.device, m * n if splits > 1 else 0,
                                  tiles if splits > 1 else 0)
    _awq_matmul_kernel[(tiles, splits)](
        x, qweight, qzeros, scales, bias if bias is not None else y, y,
        ws.view(torch.float32), locks,
        m, n, k, group_size, splits, k_per_split,
        x.stride(0), qweight.stride(0), qzeros.stride(0), scales.stride(0), y.stride(0),
        PROLOGUE=_SILU_MUL if silu_mul else _PLAIN,
        HAS_BIAS=bias is not None,
        SPLIT=splits > 1,
        DOT_PRECISION=dot_precision(x.dtype),
        EVEN_M=m % block_m == 0,
        EVEN_N=n % block_n == 0,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        GROUP_M=8,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    return y


def _kernel_takes(x: torch.Tensor, group_size: int, use_dot: bool) -> bool:
    """Whether the kernel handles this input: tl.dot needs 16 rows of K in a group."""
    return x.dtype in (torch.float16, torch.bfloat16, torch.float32) and (
        not use_dot or _block_k(group_size, 16) == 16
    )


def awq_linear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x[M, K] @ w[K, N] (+ bias)`` in ``x``'s dtype for the AutoAWQ-packed ``w``, as
    :func:`.quant_reference.awq_linear` defines it (fp32 accumulation)."""
    k = x.shape[-1]
    _check(x, qweight, qzeros, scales, group_size, bias, k)
    config = pick_config(x.shape[0], qweight.shape[1] * 8, k)
    if config is None or not _kernel_takes(x, group_size, config.block_m > 1):
        w = awq_dequantize(qweight, qzeros, scales, group_size, x.dtype)
        return x @ w if bias is None else torch.addmm(bias, x, w)
    return launch(x, qweight, qzeros, scales, group_size, bias, config)


def awq_silu_mul_linear(
    gate_up: torch.Tensor,
    qweight: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``awq_linear(silu(gate) * up, ...)`` for ``gate_up: [M, 2*I]``: the gated MLP's down
    projection, with the activation inside the matmul where :data:`FUSED_CONFIGS` says so."""
    expect(gate_up.dim() == 2 and gate_up.shape[1] % 2 == 0,
           f"gate_up must be [M, 2*I], got {tuple(gate_up.shape)}.")
    inter = gate_up.shape[1] // 2
    _check(gate_up[:, :inter], qweight, qzeros, scales, group_size, bias, inter)
    n = qweight.shape[1] * 8
    config = FUSED_CONFIGS.get((row_bucket(gate_up.shape[0]), shape_class(n, inter)))
    if config is None or not _kernel_takes(gate_up, group_size, config.block_m > 1):
        return awq_linear(triton_activation.silu_and_mul(gate_up), qweight, qzeros, scales,
                          group_size, bias)
    return launch(gate_up, qweight, qzeros, scales, group_size, bias, config, silu_mul=True)
