"""W4A16 matmuls on AutoAWQ's GEMM layout (see :mod:`.quant_reference` for the layout).

One kernel covers every row count. Each program owns an output tile and walks its slice of K in
``block_k`` rows that lie inside one quantization group, so the tile's zeros and scales are one
row each (loaded a block ahead). Nibbles become floats without int-to-float conversions (a
quarter of the FMA rate) by OR-ing them into the mantissa of a float constant. At batch 1 the
packed weights must stream at ~4 TB/s, which leaves about four instructions per weight, so:

- up to :data:`SCALE_AFTER_MAX_ROWS` rows with 16-bit activations (the decode path): one shift
  and one LOP3 unpack two weights at once into packed 16-bit ``c + q`` (:func:`spread_pairs`:
  AutoAWQ's order puts neighbouring columns in the two halves of a word), ``tl.dot`` multiplies
  them with the rows (padded to 16), and the zeros and scales apply per output:
  ``(x . (c + q) - sum(x) (c + z)) * s``. About 3 instructions per weight in the sm_90 SASS;
- otherwise the weights unpack one per LOP3 into fp32 ``2**23 + q * 2**pos``
  (:func:`spread_nibbles`), and subtracting the zero built the same way leaves ``(q - z) *
  2**pos`` exactly; beyond 32 rows it is scaled and rounded to the activation dtype (exactly the
  reference's dequantized weight) before ``tl.dot``; ``block_m == 1`` selects an elementwise
  fp32 multiply-accumulate instead (about twice the instructions: kept for the sweep).

Small batches split K over several programs per tile (see :mod:`.triton_quant_common`). At
prefill sizes the weight is dequantized once into a bf16/fp16 matrix and cuBLAS multiplies it:
writing the 16-bit copy costs a few percent of an 8,192-row matmul, and cuBLAS beats a Triton
tile loop there. :data:`CONFIGS` and :data:`DEQUANT_MIN_ROWS` hold the choices.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import triton_activation, triton_awq_gemv, triton_awq_tc
from .triton_awq_dequant import (
    MAGIC,
    PAIR_MAGIC,
    awq_dequantize,
    block_k_for,
    group_params,
    load_words,
    rows_contiguous,
    spread_nibbles,
    spread_pairs,
)
from .triton_common import dot_precision, expect, input_tile
from .triton_quant_common import (
    LARGE,
    MatmulConfig,
    reduce_split_k,
    row_bucket,
    shape_class,
    split_k_slices,
    split_k_workspace,
    tile_coords,
)

# From this many rows on, dequantize the weight and let cuBLAS multiply. On an H200 (run K's
# sweep, Llama-3-8B's shapes) one decode step's matmuls at 256 rows took 19.5 ms in the tile
# kernel against 6.0 for bf16's cuBLAS, and dequantizing every weight costs about 9.2 ms a step
# (an 8,192-row step: 153.0 against 143.8 ms), so 256 rows run dequantized (about 15 ms); at 64
# rows the two tie (8.8 against about 13).
DEQUANT_MIN_ROWS = 256
# Up to this many rows per tile the scales multiply each K block's partial product; beyond,
# the weight tile (whichever is the smaller tensor).
SCALE_AFTER_MAX_ROWS = 32

_ONE_ROW = dict(block_m=1, block_n=256, block_k=32, num_warps=4, num_stages=2)
# Keys: the row bucket (triton_quant_common.ROW_BUCKETS, LARGE past them) and the shape class.
# Rows 1, 16, 64 and 256: the fastest of `scripts/bench_quant_linear.py --sweep` on an H200
# (Llama-3-8B's shapes, group 128): at one row the elementwise loop, QKV 16.1 us, o 14.0,
# gate/up 58.9, down 32.1 (0.6-1.0 TB/s of 4-bit weights: the unpacking, not the memory, bounds
# it). Rows 32 and 128, LM heads: not swept, chosen so that no entry spills registers.
CONFIGS: dict[tuple[int, str], MatmulConfig] = {
    (1, "narrow"): MatmulConfig(**_ONE_ROW, split_k=16),
    (1, "wide"): MatmulConfig(**_ONE_ROW, split_k=5),
    (1, "deep"): MatmulConfig(**_ONE_ROW, split_k=16),
    (1, "vocab"): MatmulConfig(16, 128, 128, 1, 4, 3),
    (16, "narrow"): MatmulConfig(16, 64, 128, 4, 4, 4),
    (16, "wide"): MatmulConfig(16, 128, 128, 1, 4, 4),
    (16, "deep"): MatmulConfig(16, 128, 128, 8, 4, 4),
    (16, "vocab"): MatmulConfig(16, 128, 128, 1, 4, 3),
    (32, "narrow"): MatmulConfig(32, 128, 128, 8, 4, 3),
    (32, "wide"): MatmulConfig(32, 128, 128, 2, 4, 3),
    (32, "deep"): MatmulConfig(32, 128, 128, 16, 4, 3),
    (32, "vocab"): MatmulConfig(32, 128, 128, 1, 4, 3),
    (64, "narrow"): MatmulConfig(64, 64, 64, 4, 4, 4),
    (64, "wide"): MatmulConfig(64, 128, 128, 1, 4, 3),
    (64, "deep"): MatmulConfig(64, 64, 128, 4, 4, 4),
    (128, "narrow"): MatmulConfig(64, 128, 64, 2, 4, 4),
    (128, "wide"): MatmulConfig(64, 256, 64, 1, 8, 3),
    (128, "deep"): MatmulConfig(64, 128, 64, 4, 4, 4),
    (256, "narrow"): MatmulConfig(64, 128, 128, 2, 4, 3),
    (256, "wide"): MatmulConfig(128, 128, 128, 1, 8, 3),
    (256, "deep"): MatmulConfig(128, 128, 128, 4, 8, 3),
}
_DEFAULT_LARGE = MatmulConfig(128, 256, 64, 1, 8, 3)

# Where the decode MLP's silu(gate) * up runs inside the down projection rather than in its own
# kernel first. Keys as in CONFIGS. Empty: every program repeats the activation, which measured
# slower than its own kernel at 1 and 16 rows on an H200 (66.8 us fused against 55.6 split at
# one row, 75.9 against 62.3 at 16).
FUSED_CONFIGS: dict[tuple[int, str], MatmulConfig] = {}


def pick_config(m: int, n: int, k: int) -> MatmulConfig | None:
    """Launch parameters for ``m`` rows of a ``[k, n]`` weight; None where dequantizing once
    and running cuBLAS is faster."""
    if m >= DEQUANT_MIN_ROWS:
        return None
    bucket = row_bucket(m)
    cls = shape_class(n, k)
    return CONFIGS.get((bucket, cls)) or CONFIGS.get((LARGE, cls), _DEFAULT_LARGE)


@triton.jit
def _load_rows(x_ptr, rows, offs_k, M, K, stride_xm, SILU_MUL: tl.constexpr,
               EVEN_M: tl.constexpr):
    """The input tile ``[len(rows), len(offs_k)]`` in the activation dtype: loaded as it is,
    or (SiLU-and-mul) computed in fp32 and rounded as the unfused ops round (so exact)."""
    if not SILU_MUL:
        ptrs = x_ptr + rows[:, None] * stride_xm + offs_k[None, :]
        if EVEN_M:
            return tl.load(ptrs, eviction_policy="evict_last")
        return tl.load(ptrs, mask=rows[:, None] < M, other=0.0, eviction_policy="evict_last")
    x = input_tile(x_ptr, rows, offs_k, M, K, stride_xm, True, EVEN_M)
    return x.to(x_ptr.dtype.element_ty)


# The split count is a plain runtime value: a kernel compiled for one serves every count.
@triton.jit(do_not_specialize=["split_k", "k_per_split", "magic"])
def _awq_matmul_kernel(
    x_ptr, qw_ptr, qz_ptr, s_ptr, bias_ptr, y_ptr, ws_ptr, lock_ptr,
    M, N, K, split_k, k_per_split, magic,
    stride_xm, stride_qk, stride_zg, stride_sg, stride_ym,
    GROUP: tl.constexpr,
    SILU_MUL: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    PACKED: tl.constexpr,
    SCALE_AFTER: tl.constexpr,
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
    dtype = x_ptr.dtype.element_ty
    last_group = K // GROUP - 1
    z, scale = group_params(qz_ptr, s_ptr, k_begin // GROUP, pid_n, N, stride_zg, stride_sg,
                            magic, PACKED, dtype, EVEN_N, BLOCK_N)
    for k0 in range(k_begin, k_end, BLOCK_K):
        # The next block's zeros and scales load now and are waited for one block later (they
        # are too narrow for the pipeliner's async copies).
        z_next, scale_next = group_params(
            qz_ptr, s_ptr, tl.minimum((k0 + BLOCK_K) // GROUP, last_group), pid_n, N,
            stride_zg, stride_sg, magic, PACKED, dtype, EVEN_N, BLOCK_N)
        # k_begin is a multiple of BLOCK_K; saying so lets the loads vectorize (and pipeline:
        # an async copy needs aligned 4-byte pieces).
        offs_k = tl.max_contiguous(tl.multiple_of(k0 + tl.arange(0, BLOCK_K), BLOCK_K), BLOCK_K)
        words = load_words(qw_ptr, offs_k, pid_n, N, stride_qk, EVEN_N, BLOCK_N)
        if PACKED:
            # sum_k x (c + q) - (sum_k x) (c + z) = sum_k x (q - z), scaled per column: no
            # per-weight arithmetic beyond the shift and LOP3 that unpack it.
            x = _load_rows(x_ptr, rows, offs_k, M, K, stride_xm, SILU_MUL, EVEN_M)
            part = tl.dot(x, spread_pairs(words, magic, dtype), input_precision=DOT_PRECISION)
            x_sum = tl.sum(x.to(tl.float32), 1)
            acc += (part - x_sum[:, None] * z[None, :]) * scale[None, :]
        else:
            d = spread_nibbles(words, magic) - z[None, :]  # (q - z) * 2**pos, exact
            x = input_tile(x_ptr, rows, offs_k, M, K, stride_xm, SILU_MUL, EVEN_M)
            if BLOCK_M == 1:
                acc += tl.reshape(x, (BLOCK_K, 1)) * (d * scale[None, :])
            elif SCALE_AFTER:
                # d is exact in any float type; the scales multiply [BLOCK_M, BLOCK_N] sums.
                part = tl.dot(x.to(dtype), d.to(dtype), input_precision=DOT_PRECISION)
                acc += part * scale[None, :]
            else:
                w = (d * scale[None, :]).to(dtype)  # the reference's dequantized weight, exactly
                acc = tl.dot(x.to(dtype), w, acc, input_precision=DOT_PRECISION)
        z, scale = z_next, scale_next
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
    x = rows_contiguous(x)
    qweight, qzeros, scales = (rows_contiguous(t) for t in (qweight, qzeros, scales))
    m, k, n = x.shape[0], qweight.shape[0], qweight.shape[1] * 8
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return y
    use_dot = config.block_m > 1
    block_m = max(config.block_m, 16) if use_dot else 1
    block_n = min(config.block_n, max(16 if use_dot else 8, triton.next_power_of_2(n)))
    block_k = block_k_for(group_size, min(config.block_k, triton.next_power_of_2(k)))
    k_per_split, splits = split_k_slices(k, config.split_k, block_k)
    tiles = triton.cdiv(m, block_m) * triton.cdiv(n, block_n)
    ws, locks = split_k_workspace(x.device, m * n if splits > 1 else 0,
                                  tiles if splits > 1 else 0)
    scale_after = use_dot and block_m <= SCALE_AFTER_MAX_ROWS
    packed = scale_after and x.dtype in PAIR_MAGIC
    _awq_matmul_kernel[(tiles, splits)](
        x, qweight, qzeros, scales, bias if bias is not None else y, y,
        ws.view(torch.float32), locks,
        m, n, k, splits, k_per_split, PAIR_MAGIC[x.dtype] if packed else MAGIC.value,
        x.stride(0), qweight.stride(0), qzeros.stride(0), scales.stride(0), y.stride(0),
        GROUP=group_size,
        SILU_MUL=silu_mul,
        HAS_BIAS=bias is not None,
        SPLIT=splits > 1,
        PACKED=packed,
        SCALE_AFTER=scale_after,
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
        not use_dot or block_k_for(group_size, 16) == 16
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


def linear_awq(x: torch.Tensor, w) -> torch.Tensor:
    """The op table's linear for an :class:`~lmforge.model.linear.AWQLinear` weight: the GEMV
    or the tensor-core matmul on its repacked layout where :mod:`.triton_awq_gemv`'s or
    :mod:`.triton_awq_tc`'s table says so."""
    config = triton_awq_gemv.gemv_config(x, w)
    if config is not None:
        return triton_awq_gemv.launch(x, w.qweight_nk, w.qzeros, w.scales, w.group_size, w.bias,
                                      config)
    tc = triton_awq_tc.tc_config(x, w)
    if tc is not None:
        return triton_awq_tc.launch(x, w.qweight_nk, w.qzeros, w.scales, w.group_size, w.bias,
                                    tc)
    return awq_linear(x, w.qweight, w.qzeros, w.scales, w.group_size, w.bias)


def silu_mul_linear_awq(gate_up: torch.Tensor, w) -> torch.Tensor:
    """The op table's gated-MLP down projection for an AWQ weight."""
    if (triton_awq_gemv.gemv_config(gate_up, w) is not None
            or triton_awq_tc.tc_config(gate_up, w) is not None):
        return linear_awq(triton_activation.silu_and_mul(gate_up), w)
    return awq_silu_mul_linear(gate_up, w.qweight, w.qzeros, w.scales, w.group_size, w.bias)
