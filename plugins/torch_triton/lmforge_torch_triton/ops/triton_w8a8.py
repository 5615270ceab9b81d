"""W8A8 matmuls: int8 x int8 -> int32 and fp8 e4m3 x fp8 -> fp32 with the per-token x
per-channel scale epilogue (see :mod:`.quant_reference` for the arithmetic).

One kernel covers every row count, as the W4A16 one does: ``tl.dot`` on the 8-bit tensor cores
over tiles of at least 16 rows (a decode step's few rows are padded: the padding loads nothing),
or with ``block_m == 1`` an elementwise multiply-accumulate over ``[block_n, block_k]`` weight
tiles (int32 for int8, so the sums are exact). Small batches split K over several programs per
tile (:mod:`.triton_quant_common`; int32 partial sums add exactly). The product is scaled only
once the whole K range is summed.

At decode sizes the kernel can also quantize its own input (``x``, or ``silu(gate) * up``), so a
layer's activation quantization costs no launch of its own: each program first finds its rows'
absmax over K, then quantizes every tile as it streams the weights, with the arithmetic of
:mod:`.triton_quant_act` (the codes are the ones that kernel would write). :data:`FUSED_CONFIGS`
says where that measured faster. For fp8 at prefill sizes ``torch._scaled_mm`` (cuBLASLt, with
row-wise scales) runs from :data:`SCALED_MM_MIN_ROWS` rows on; int8 can take ``torch._int_mm``
from :data:`INT_MM_MIN_ROWS` on, at the price of one more pass over the int32 product.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .quant_reference import QMAX
from .triton_common import expect, input_tile
from .triton_quant_act import (
    QUANT_DTYPES,
    quantize_per_token,
    quantize_values,
    row_scale,
    silu_mul_quant,
)
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

# What the kernel reads as its input.
_GIVEN = 0  # codes and scales already quantized
_QUANT = 1  # float x, quantized per token inside
_SILU_QUANT = 2  # silu(x[:, :K]) * x[:, K:], quantized per token inside

# From this many rows on, fp8 with a bf16 output runs through torch._scaled_mm.
SCALED_MM_MIN_ROWS = 64
# From this many rows on, int8 runs through torch._int_mm and a scale epilogue kernel; None:
# never (the Triton kernel applies the scales without another pass over the product), unless
# bench_quant_linear.py's large-M table shows cuBLASLt ahead anyway.
INT_MM_MIN_ROWS: int | None = None

# Decode sizes: tl.dot on 16-row tiles (padding rows load nothing) feeds the 8-bit codes to the
# tensor cores as they are; at one row the elementwise loop (block_m 1) over long K steps won on
# QKV, o_proj and down_proj.
_DECODE = dict(block_m=16, block_n=64, block_k=256, num_warps=4, num_stages=4)
# Keys: the row bucket (triton_quant_common.ROW_BUCKETS, LARGE past them) and the shape class.
# Rows 1, 16, 64 and 256: the fastest of `scripts/bench_quant_linear.py --sweep` on an H200
# (Llama-3-8B's shapes, int8; fp8's best were the same configs within 5 %), e.g. at one row
# QKV 10.2 us, o 7.2, gate/up 29.8, down 18.0 (2.3-3.9 TB/s). Rows 32 and 128, LM heads:
# not swept, chosen so that no entry spills registers in the sm_90 build.
CONFIGS: dict[tuple[int, str], MatmulConfig] = {
    (1, "narrow"): MatmulConfig(1, 4, 2048, 1, 4, 1),
    (1, "wide"): MatmulConfig(16, 128, 128, 1, 4, 4),
    (1, "deep"): MatmulConfig(1, 8, 1024, 1, 4, 1),
    (1, "vocab"): MatmulConfig(**_DECODE, split_k=1),
    (16, "narrow"): MatmulConfig(16, 64, 128, 4, 4, 4),
    (16, "wide"): MatmulConfig(16, 128, 128, 1, 4, 4),
    (16, "deep"): MatmulConfig(16, 64, 256, 4, 4, 3),
    (32, "narrow"): MatmulConfig(32, 64, 256, 4, 4, 4),
    (32, "wide"): MatmulConfig(32, 64, 256, 1, 4, 4),
    (32, "deep"): MatmulConfig(32, 64, 256, 8, 4, 4),
    (64, "narrow"): MatmulConfig(64, 64, 128, 4, 4, 4),
    (64, "wide"): MatmulConfig(64, 64, 128, 1, 4, 3),
    (64, "deep"): MatmulConfig(64, 64, 256, 4, 4, 3),
    (128, "narrow"): MatmulConfig(64, 128, 128, 2, 8, 4),
    (128, "wide"): MatmulConfig(128, 128, 128, 1, 8, 4),
    (128, "deep"): MatmulConfig(64, 128, 128, 2, 8, 4),
    (256, "narrow"): MatmulConfig(64, 128, 128, 2, 4, 3),
    (256, "wide"): MatmulConfig(128, 128, 128, 1, 8, 3),
    (256, "deep"): MatmulConfig(64, 128, 128, 2, 4, 3),
}
_DEFAULT_LARGE = MatmulConfig(128, 256, 128, 1, 8, 3)

# Where the kernel quantizes its own input rather than a quantize kernel running first. Keys:
# "quant" or "silu", then as in CONFIGS. Empty: every program repeats the row's quantization,
# which measured slower than its own kernel at 1 and 16 rows on an H200 (o_proj at one row
# 36.5 us fused against 13.3 split, SiLU-and-mul + down 210 against 29.5).
FUSED_CONFIGS: dict[tuple[str, int, str], MatmulConfig] = {}


def pick_config(m: int, n: int, k: int) -> MatmulConfig:
    """Launch parameters for ``m`` rows of a ``[n, k]`` weight."""
    cls = shape_class(n, k)
    return CONFIGS.get((row_bucket(m), cls)) or CONFIGS.get((LARGE, cls), _DEFAULT_LARGE)


@triton.jit
def _row_absmax(x_ptr, rows, M, K, stride_xm, SILU_MUL: tl.constexpr, EVEN: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """The largest magnitude of each input row ``[BLOCK_M]`` over all of K."""
    absmax = tl.zeros([BLOCK_M], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        v = input_tile(x_ptr, rows, k0 + tl.arange(0, BLOCK_K), M, K, stride_xm, SILU_MUL, EVEN)
        absmax = tl.maximum(absmax, tl.max(tl.abs(v), 1))
    return absmax


# The split count is a plain runtime value: a kernel compiled for one serves every count.
@triton.jit(do_not_specialize=["split_k", "k_per_split"])
def _w8a8_matmul_kernel(
    x_ptr, xs_ptr, w_ptr, wscale_ptr, bias_ptr, y_ptr, ws_ptr, lock_ptr,
    M, N, K, split_k, k_per_split, stride_xm, stride_wn, stride_ym,
    PROLOGUE: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    IS_FP8: tl.constexpr,
    QMAX_: tl.constexpr,
    EVEN_M: tl.constexpr,
    EVEN_N: tl.constexpr,
    EVEN_K: tl.constexpr,
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
    acc_dtype = tl.float32 if IS_FP8 else tl.int32
    if PROLOGUE == 0:
        x_scale = tl.load(xs_ptr + rows, mask=rows < M, other=0.0)
    else:
        absmax = _row_absmax(x_ptr, rows, M, K, stride_xm, PROLOGUE == 2, EVEN_M and EVEN_K,
                             BLOCK_M, BLOCK_K)
        x_scale = row_scale(absmax, QMAX_)
    if BLOCK_M == 1:
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=acc_dtype)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=acc_dtype)
    w_rows = w_ptr + offs_n.to(tl.int64)[:, None] * stride_wn
    for k0 in range(k_begin, k_end, BLOCK_K):
        # k_begin is a multiple of BLOCK_K; saying so lets the loads vectorize (and pipeline:
        # an async copy needs aligned 4-byte pieces).
        offs_k = tl.max_contiguous(tl.multiple_of(k0 + tl.arange(0, BLOCK_K), BLOCK_K), BLOCK_K)
        # Each weight byte is read once: let it leave the cache first.
        if EVEN_N and EVEN_K:
            w = tl.load(w_rows + offs_k[None, :], eviction_policy="evict_first")
        else:
            w = tl.load(w_rows + offs_k[None, :], mask=(offs_n[:, None] < N) &
                        (offs_k[None, :] < K), other=0.0, eviction_policy="evict_first")
        if PROLOGUE == 0:
            x_ptrs = x_ptr + rows[:, None] * stride_xm + offs_k[None, :]
            if EVEN_M and EVEN_K:
                xq = tl.load(x_ptrs)
            else:
                xq = tl.load(x_ptrs, mask=(rows[:, None] < M) & (offs_k[None, :] < K), other=0.0)
        else:
            v = input_tile(x_ptr, rows, offs_k, M, K, stride_xm, PROLOGUE == 2,
                           EVEN_M and EVEN_K)
            xq = quantize_values(v, x_scale[:, None], IS_FP8)
        if BLOCK_M == 1:
            acc += w.to(acc_dtype) * xq.to(acc_dtype)  # xq: [1, BLOCK_K], over the weight rows
        else:
            acc = tl.dot(xq, tl.trans(w), acc, out_dtype=acc_dtype)
    if BLOCK_M == 1:
        y = tl.sum(acc, 1)[None, :]
    else:
        y = acc
    mask = (rows[:, None] < M) & (offs_n[None, :] < N)
    lock = lock_ptr + pid_m * tl.cdiv(N, BLOCK_N) + pid_n
    y, is_last = reduce_split_k(y, ws_ptr + rows[:, None] * N + offs_n[None, :], mask, lock,
                                split_k, SPLIT)
    if is_last:
        _scale_store(y, x_scale, rows, offs_n, mask, wscale_ptr, bias_ptr, y_ptr, N, stride_ym,
                     HAS_BIAS)


@triton.jit
def _scale_store(acc, x_scale, rows, offs_n, mask, wscale_ptr, bias_ptr, y_ptr, N, stride_ym,
                 HAS_BIAS: tl.constexpr):
    """The epilogue: ``acc * x_scale[:, None] * w_scale[None, :] (+ bias)`` in fp32, stored in
    the output's dtype."""
    w_scale = tl.load(wscale_ptr + offs_n, mask=offs_n < N, other=0.0)
    out = acc.to(tl.float32) * x_scale[:, None] * w_scale[None, :]
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    tl.store(y_ptr + rows[:, None] * stride_ym + offs_n[None, :], out.to(y_ptr.dtype.element_ty),
             mask=mask)


@triton.jit
def _scale_kernel(acc_ptr, xs_ptr, wscale_ptr, bias_ptr, y_ptr, M, N, stride_am, stride_ym,
                  HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < M) & (offs_n[None, :] < N)
    acc = tl.load(acc_ptr + rows.to(tl.int64)[:, None] * stride_am + offs_n[None, :], mask=mask,
                  other=0)
    x_scale = tl.load(xs_ptr + rows, mask=rows < M, other=0.0)
    _scale_store(acc, x_scale, rows.to(tl.int64), offs_n, mask, wscale_ptr, bias_ptr, y_ptr, N,
                 stride_ym, HAS_BIAS)


def launch(
    x: torch.Tensor,
    x_scale: torch.Tensor | None,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: MatmulConfig,
    prologue: str = "",
) -> torch.Tensor:
    """The matmul kernel with explicit launch parameters (the entry point of
    ``scripts/bench_quant_linear.py``). ``prologue``: "" for codes ``x`` with ``x_scale``;
    "quant" for a float ``x`` it quantizes; "silu" for ``x = gate_up: [M, 2K]``, quantizing
    ``silu(gate) * up``."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    wq = wq if wq.stride(-1) == 1 else wq.contiguous()
    m, n, k = x.shape[0], wq.shape[0], wq.shape[1]
    y = torch.empty(m, n, dtype=out_dtype, device=x.device)
    if m == 0:
        return y
    use_dot = config.block_m > 1
    block_m = max(config.block_m, 16) if use_dot else 1
    block_n = min(config.block_n, max(16 if use_dot else 1, triton.next_power_of_2(n)))
    block_k = min(config.block_k, max(32, triton.next_power_of_2(k)))
    k_per_split, splits = split_k_slices(k, config.split_k, block_k)
    tiles = triton.cdiv(m, block_m) * triton.cdiv(n, block_n)
    ws, locks = split_k_workspace(x.device, m * n if splits > 1 else 0,
                                  tiles if splits > 1 else 0)
    is_fp8 = wq.dtype != torch.int8
    _w8a8_matmul_kernel[(tiles, splits)](
        x, x_scale if x_scale is not None else w_scale, wq, w_scale,
        bias if bias is not None else w_scale, y,
        ws.view(torch.float32) if is_fp8 else ws, locks,
        m, n, k, splits, k_per_split, x.stride(0), wq.stride(0), y.stride(0),
        PROLOGUE={"": _GIVEN, "quant": _QUANT, "silu": _SILU_QUANT}[prologue],
        HAS_BIAS=bias is not None,
        SPLIT=splits > 1,
        IS_FP8=is_fp8,
        QMAX_=QMAX[wq.dtype],
        EVEN_M=m % block_m == 0,
        EVEN_N=n % block_n == 0,
        EVEN_K=k % block_k == 0,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        GROUP_M=8,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    return y


def _check_weight(wq: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None,
                  k: int) -> None:
    expect(wq.dim() == 2 and wq.dtype in QUANT_DTYPES and wq.shape[1] == k,
           f"wq must be int8 or float8_e4m3fn [N, K={k}], got {wq.dtype} {tuple(wq.shape)}.")
    n = wq.shape[0]
    expect(w_scale.dtype == torch.float32 and w_scale.shape == (n,),
           f"w_scale must be float32 [N={n}], got {w_scale.dtype} {tuple(w_scale.shape)}.")
    expect(bias is None or bias.shape == (n,),
           f"bias must be [N={n}], got {None if bias is None else tuple(bias.shape)}.")


def _int_mm_takes(xq: torch.Tensor, wq: torch.Tensor) -> bool:
    """Where cuBLASLt's int8 matmul runs (:data:`INT_MM_MIN_ROWS`; it needs more than 16 rows
    and 8-aligned K and N)."""
    return (INT_MM_MIN_ROWS is not None and wq.dtype == torch.int8 and xq.is_cuda
            and xq.shape[0] >= max(INT_MM_MIN_ROWS, 17) and xq.shape[1] % 8 == 0
            and wq.shape[0] % 8 == 0)


def int_mm_linear(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """int8 through ``torch._int_mm`` (cuBLASLt on a GPU; int32 out), then the scale epilogue
    in one pass."""
    acc = torch._int_mm(xq.contiguous(), wq.t())
    m, n = acc.shape
    y = torch.empty(m, n, dtype=out_dtype, device=acc.device)
    _scale_kernel[(triton.cdiv(m, 32), triton.cdiv(n, 128))](
        acc, x_scale, w_scale, bias if bias is not None else w_scale, y, m, n, acc.stride(0),
        y.stride(0), HAS_BIAS=bias is not None, BLOCK_M=32, BLOCK_N=128, num_warps=4,
    )
    return y


def _scaled_mm_takes(xq: torch.Tensor, wq: torch.Tensor, out_dtype: torch.dtype,
                     bias: torch.Tensor | None) -> bool:
    """Where cuBLASLt's fp8 matmul with row-wise scales applies (bf16 output, 16-aligned; a
    bias goes to the Triton kernel, whose epilogue adds it in fp32 as the reference does)."""
    return (wq.dtype == torch.float8_e4m3fn and xq.is_cuda and out_dtype == torch.bfloat16
            and xq.shape[0] >= SCALED_MM_MIN_ROWS and xq.shape[1] % 16 == 0
            and wq.shape[0] % 16 == 0 and bias is None)


def w8a8_linear(
    xq: torch.Tensor,
    x_scale: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """``(xq @ wq.T) * x_scale[:, None] * w_scale[None, :] (+ bias)`` in ``out_dtype``, as
    :func:`.quant_reference.w8a8_linear` defines it."""
    expect(xq.dim() == 2, f"xq must be [M, K], got {tuple(xq.shape)}.")
    _check_weight(wq, w_scale, bias, xq.shape[1])
    expect(xq.dtype == wq.dtype, f"xq ({xq.dtype}) and wq ({wq.dtype}) must share a type.")
    expect(x_scale.dtype == torch.float32 and x_scale.shape == (xq.shape[0],),
           f"x_scale must be float32 [M={xq.shape[0]}], got {x_scale.dtype} "
           f"{tuple(x_scale.shape)}.")
    if _int_mm_takes(xq, wq):
        return int_mm_linear(xq, x_scale, wq, w_scale, bias, out_dtype)
    if _scaled_mm_takes(xq, wq, out_dtype, bias):
        return torch._scaled_mm(xq, wq.t(), scale_a=x_scale[:, None], scale_b=w_scale[None, :],
                                out_dtype=out_dtype)
    config = pick_config(xq.shape[0], wq.shape[0], xq.shape[1])
    return launch(xq, x_scale, wq, w_scale, bias, out_dtype, config)


def w8a8_quant_linear(
    x: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x`` quantized per token to ``wq``'s type, then :func:`w8a8_linear` in ``x``'s dtype;
    one kernel where :data:`FUSED_CONFIGS` says so."""
    expect(x.dim() == 2, f"x must be [M, K], got {tuple(x.shape)}.")
    _check_weight(wq, w_scale, bias, x.shape[1])
    m, n, k = x.shape[0], wq.shape[0], x.shape[1]
    config = FUSED_CONFIGS.get(("quant", row_bucket(m), shape_class(n, k)))
    if config is None:
        xq, x_scale = quantize_per_token(x, wq.dtype)
        return w8a8_linear(xq, x_scale, wq, w_scale, bias, x.dtype)
    return launch(x, None, wq, w_scale, bias, x.dtype, config, "quant")


def w8a8_silu_mul_linear(
    gate_up: torch.Tensor,
    wq: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``w8a8_quant_linear(silu(gate) * up, ...)`` for ``gate_up: [M, 2*I]``: the gated MLP's
    down projection; one kernel where :data:`FUSED_CONFIGS` says so."""
    expect(gate_up.dim() == 2 and gate_up.shape[1] % 2 == 0,
           f"gate_up must be [M, 2*I], got {tuple(gate_up.shape)}.")
    inter = gate_up.shape[1] // 2
    _check_weight(wq, w_scale, bias, inter)
    m, n = gate_up.shape[0], wq.shape[0]
    config = FUSED_CONFIGS.get(("silu", row_bucket(m), shape_class(n, inter)))
    if config is None:
        xq, x_scale = silu_mul_quant(gate_up, wq.dtype)
        return w8a8_linear(xq, x_scale, wq, w_scale, bias, gate_up.dtype)
    return launch(gate_up, None, wq, w_scale, bias, gate_up.dtype, config, "silu")


def linear_w8a8(x: torch.Tensor, w) -> torch.Tensor:
    """The op table's linear for a :class:`~lmforge.model.linear.W8A8Linear` weight: the input
    is quantized per token inside the matmul at decode sizes, by its own kernel above them."""
    return w8a8_quant_linear(x, w.weight, w.weight_scale, w.bias)


def silu_mul_linear_w8a8(gate_up: torch.Tensor, w) -> torch.Tensor:
    """The op table's gated-MLP down projection for a W8A8 weight."""
    return w8a8_silu_mul_linear(gate_up, w.weight, w.weight_scale, w.bias)
