"""W4A16 GEMV for decode-sized batches (1 to :data:`MAX_ROWS` rows) on a K-major repack of
AutoAWQ's weights.

At one row the packed weights must stream at ~4 TB/s, which leaves about four and a half
issued instructions per weight on an H200 (132 SMs x 4 schedulers x 32 lanes x 1.98 GHz over
~7.4 T weights/s). AutoAWQ's ``[K, N/8]`` words hold eight neighbouring
*columns*, so a GEMV over them unpacks into column order and pays for interleaves; this kernel
reads a copy repacked once at load time (:func:`repack`), ``[N, K/8]`` int32, where a word
holds eight K positions of one output column. Each program owns ``BLOCK_N`` columns and walks
its slice of K in blocks of ``BLOCK_K`` (inside one quantization group): the words of a column
are one contiguous run, loaded 16 bytes per thread.

Within a block of ``8C`` positions (``C = BLOCK_K / 8`` words), nibble ``j`` of word ``c``
holds position ``j * C + c``: nibble ``j`` of every word meets the same contiguous ``C``
activations, so the tile never leaves its register layout. A nibble becomes a float without an
int-to-float conversion by OR-ing it into the mantissa of a float whose unit bit it then sits
on: 128.0 at bits 16-19 or 2048.0 at bits 12-15, giving exactly ``128 + q`` or ``2048 + q``
(:func:`_nibble`: three shifts and eight LOP3s per word). The offsets, the zero and the scale
apply once per block and column: ``sum_k x (q - z) s = s * (sum_k x w - 1920 X_odd - (128 + z)
X)``, ``X`` the block's activation sum and ``X_odd`` that over the nibbles under 2048; so a
weight costs one FMA besides its unpacking. (The offsets cost up to 11 bits of the fp32 sum of
a block, which keeps 13, more than a 16-bit output holds; with fp32 activations the error is
~2e-5 of the output's size.)
In the sm_90 SASS (``scripts/awq_gemv_instructions.py``) one row takes 3.4 instructions per
weight at 256 columns and 4 warps per program, 3.9 at 128; each further row adds about two
(its FMAs, and its activations' loads and conversions), so at a few rows the tensor-core tiles
of :mod:`.triton_awq` may be faster: the launch table says which runs.

Small batches split K over several programs per column tile (:mod:`.triton_quant_common`).
:data:`CONFIGS` says where the kernel runs; where it has no entry the AutoAWQ-layout kernels of
:mod:`.triton_awq` do, and the weights are not repacked (:func:`wanted`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from lmforge.model.linear import AWQLinear

from .quant_reference import awq_unpack
from .triton_awq_dequant import block_k_for, rows_contiguous
from .triton_common import expect, expect_dtype
from .triton_quant_common import reduce_split_k, shape_class, split_k_slices, split_k_workspace

# The most rows the kernel takes: each row repeats the FMAs over the unpacked tile.
MAX_ROWS = 8
# The bits of 128.0 and 2048.0: a nibble OR-ed in at bits 16-19 of the first, or 12-15 of the
# second, gives the float 128 + nibble or 2048 + nibble.
MAGIC_128, MAGIC_2048 = 0x43000000, 0x45000000
# The largest K block a column's words are repacked in (and the kernel steps by).
MAX_BLOCK_K = 128
# Output columns :func:`repack` converts at once.
REPACK_COLUMNS = 4096


@dataclass(frozen=True)
class GemvConfig:
    """Launch parameters of the W4A16 GEMV for one row bucket and shape class."""

    block_n: int  # output columns per program
    split_k: int  # programs that share each column tile, each over its own slice of K
    num_warps: int
    # Load the next K block before multiplying this one (registers for a second tile). Triton's
    # software pipeliner (num_stages) leaves this loop as it is: its loads feed no tl.dot.
    prefetch: bool


# Keys: the row bucket (:func:`row_bucket`) and the shape class
# (:func:`.triton_quant_common.shape_class`): an entry where `scripts/bench_quant_linear.py
# --gemv-sweep` on an H200 measured the kernel faster than the AutoAWQ-layout one over the
# class's shapes (Llama-3-8B, group 128; benchmarks/RESULTS.md, run V). At two rows it wins
# only on the narrow class, and from four rows on nowhere: each row repeats the FMAs and the
# reductions over the unpacked tile.
CONFIGS: dict[tuple[int, str], GemvConfig] = {
    (1, "narrow"): GemvConfig(256, 16, 4, False),  # 19.6 us against 30.0 (qkv + o)
    (1, "wide"): GemvConfig(512, 5, 8, False),  # 34.0 us against 58.6 (gate_up)
    (1, "deep"): GemvConfig(512, 33, 8, False),  # 20.3 us against 31.7 (down)
    (2, "narrow"): GemvConfig(64, 8, 4, False),  # 40.0 us against 47.1
}
ROW_BUCKETS = (1, 2, 4, 8)


def row_bucket(m: int) -> int:
    """The launch-table bucket of ``m`` rows (``m`` at most :data:`MAX_ROWS`)."""
    return next(b for b in ROW_BUCKETS if m <= b)


def pick_config(m: int, n: int, k: int) -> GemvConfig | None:
    """Launch parameters for ``m`` rows of a ``[k, n]`` weight, or None where the kernel does
    not run."""
    if not 0 < m <= MAX_ROWS:
        return None
    return CONFIGS.get((row_bucket(m), shape_class(n, k)))


def wanted(n: int, k: int) -> bool:
    """Whether the kernel runs a ``[k, n]`` weight at some row count, i.e. whether loading
    should repack it."""
    cls = shape_class(n, k)
    return any(key[1] == cls for key in CONFIGS)


def block_k(group_size: int, k: int) -> int | None:
    """The K block of a ``[k, n]`` weight's repack: the largest power of two up to
    :data:`MAX_BLOCK_K` dividing the group size; None where it is under 8 positions (a word)."""
    block = block_k_for(group_size, MAX_BLOCK_K)
    return block if block >= 8 and k % block == 0 else None


def repack(qweight: torch.Tensor, group_size: int) -> torch.Tensor:
    """AutoAWQ's ``qweight`` ``[K, N/8]`` as the kernel's int32 ``[N, K/8]``: per column, blocks
    of :func:`block_k` positions, nibble ``j`` of word ``c`` holding position ``j * C + c``.
    Columns go :data:`REPACK_COLUMNS` at a time, so the int32 nibbles in between stay small."""
    k, n = qweight.shape[0], qweight.shape[1] * 8
    block = block_k(group_size, k)
    expect(block is not None, f"group_size {group_size} has no K block of 8 or more positions.")
    c = block // 8
    out = torch.empty(n, k // 8, dtype=torch.int32, device=qweight.device)
    for first in range(0, n, REPACK_COLUMNS):
        q = awq_unpack(qweight[:, first // 8:(first + REPACK_COLUMNS) // 8]).t()  # [cols, K]
        q = q.reshape(q.shape[0], k // block, 8, c)  # [cols, blocks, j, c]
        words = torch.zeros(q.shape[0], k // block, c, dtype=torch.int32, device=q.device)
        for j in range(8):
            words |= q[:, :, j].to(torch.int32) << (4 * j)  # wraps: nibble 7 sets the sign bit
        out[first:first + q.shape[0]] = words.reshape(q.shape[0], k // 8)
    return out


@dataclass
class RepackedAWQLinear(AWQLinear):
    """An AWQ weight that also holds :func:`repack`'s layout of ``qweight`` for the GEMV. The
    AutoAWQ layout stays for the matmuls of more rows, so the packed weights are held twice (a
    quarter of the 16-bit model's size more)."""

    qweight_nk: torch.Tensor | None = None  # int32 [N, K/8]


def with_gemv_layout(w: AWQLinear) -> AWQLinear:
    """``w`` with the GEMV's repack added where :data:`CONFIGS` runs the kernel on its shape
    and the group size allows it; otherwise ``w`` itself. Called once per weight at load time."""
    if (not wanted(w.out_features, w.in_features)
            or block_k(w.group_size, w.in_features) is None):
        return w
    return RepackedAWQLinear(w.qweight, w.qzeros, w.scales, w.group_size, w.bias,
                             qweight_nk=repack(w.qweight, w.group_size))


def gemv_config(x: torch.Tensor, w: AWQLinear) -> GemvConfig | None:
    """The GEMV's launch parameters for ``x @ w``, or None where another kernel runs."""
    if getattr(w, "qweight_nk", None) is None or x.dim() != 2:
        return None
    return pick_config(x.shape[0], w.out_features, w.in_features)


@triton.jit
def _nibble(words, j: tl.constexpr, magic_128, magic_2048):
    """Nibble ``j`` of each (uint32) word as the fp32 ``128 + q`` (even ``j``: at bits 16-19
    under the exponent of 128.0) or ``2048 + q`` (odd ``j``: at bits 12-15 under that of
    2048.0). Nibbles 3 and 4 are in place, and one shift serves each pair (1, 2), (5, 6) and
    (0, 7), the last a rotation by 16 (one funnel shift): three shifts and eight LOP3s per word.
    The magics are run-time values, so the OR stays in the LOP3 rather than in a constant
    rebuilt before each use."""
    if j == 0 or j == 7:
        moved = (words << 16) | (words >> 16)
    elif j == 1 or j == 2:
        moved = words << 8
    elif j == 5 or j == 6:
        moved = words >> 8
    else:
        moved = words
    if j % 2 == 0:
        return ((moved & 0x000F0000) | magic_128).to(tl.float32, bitcast=True)
    return ((moved & 0x0000F000) | magic_2048).to(tl.float32, bitcast=True)


@triton.jit
def _load_x(x_ptrs, j: tl.constexpr, C: tl.constexpr):
    """Positions ``j * C + c`` of the block (those nibble ``j`` multiplies) in fp32, as a
    ``[1, C]`` row so that it keeps the weight tile's layout. Every program reads the rows: keep
    them in cache."""
    return tl.load(x_ptrs + j * C, eviction_policy="evict_last").to(tl.float32)


@triton.jit
def _load_block(w_rows, z_ptrs, s_ptrs, k, n_ok, stride_zg, stride_sg, GROUP: tl.constexpr,
                EVEN_N: tl.constexpr, C: tl.constexpr):
    """The words ``[BLOCK_N, C]`` of the K block at ``k`` with its group's packed zeros and
    scales (``[BLOCK_N, 1]`` each)."""
    offs = tl.max_contiguous(tl.multiple_of(k // 8 + tl.arange(0, C), C), C)[None, :]
    group = k // GROUP
    zw = tl.load(z_ptrs + group * stride_zg, mask=n_ok, other=0)
    scale = tl.load(s_ptrs + group * stride_sg, mask=n_ok, other=0.0)
    # Each packed byte is read once: let it leave the cache first.
    if EVEN_N:
        return tl.load(w_rows + offs, eviction_policy="evict_first"), zw, scale
    return tl.load(w_rows + offs, mask=n_ok, other=0, eviction_policy="evict_first"), zw, scale


# The split count is a plain runtime value: a kernel compiled for one serves every count.
@triton.jit(do_not_specialize=["split_k", "k_per_split", "magic_128", "magic_2048"])
def _awq_gemv_kernel(
    x_ptr, qw_ptr, qz_ptr, s_ptr, bias_ptr, y_ptr, ws_ptr, lock_ptr,
    N, K, split_k, k_per_split, magic_128, magic_2048,
    stride_xm, stride_qn, stride_zg, stride_sg, stride_ym,
    ROWS: tl.constexpr,
    GROUP: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    EVEN_N: tl.constexpr,
    PREFETCH: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    C: tl.constexpr = BLOCK_K // 8
    pid_n = tl.program_id(0)
    # Per-column values are [BLOCK_N, 1] and the accumulator [BLOCK_N, rows], N-major like the
    # weight tile, so most per-block values stay in its layout (Triton still moves the scales
    # and the activation sums between layouts once per block).
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N))[:, None]
    offs_c = tl.arange(0, C)
    rows = tl.arange(0, BLOCK_M)[None, :]
    n_ok = offs_n < N
    k_begin = tl.program_id(1) * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    w_rows = qw_ptr + offs_n.to(tl.int64) * stride_qn
    # Column j of a group of 8 keeps its zero in nibble j // 2 + 4 (j % 2) (AutoAWQ's order).
    col = offs_n % 8
    z_shift = 4 * (col // 2 + 4 * (col % 2))
    z_ptrs = qz_ptr + offs_n // 8
    s_ptrs = s_ptr + offs_n
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    if PREFETCH:
        words_next, zw_next, scale_next = _load_block(w_rows, z_ptrs, s_ptrs, k_begin, n_ok,
                                                      stride_zg, stride_sg, GROUP, EVEN_N, C)
    for k0 in range(k_begin, k_end, BLOCK_K):
        if PREFETCH:
            # The next block's loads go out before this block's arithmetic (the last block
            # loads itself again rather than past its slice).
            words, zw, scale = words_next, zw_next, scale_next
            words_next, zw_next, scale_next = _load_block(
                w_rows, z_ptrs, s_ptrs, tl.minimum(k0 + BLOCK_K, k_end - BLOCK_K), n_ok,
                stride_zg, stride_sg, GROUP, EVEN_N, C)
        else:
            words, zw, scale = _load_block(w_rows, z_ptrs, s_ptrs, k0, n_ok, stride_zg,
                                           stride_sg, GROUP, EVEN_N, C)
        zc = ((((zw >> z_shift) & 0xF) << 16) | magic_128).to(tl.float32, bitcast=True)
        scale = scale.to(tl.float32)
        words = words.to(tl.uint32, bitcast=True)
        w0 = _nibble(words, 0, magic_128, magic_2048)
        w1 = _nibble(words, 1, magic_128, magic_2048)
        w2 = _nibble(words, 2, magic_128, magic_2048)
        w3 = _nibble(words, 3, magic_128, magic_2048)
        w4 = _nibble(words, 4, magic_128, magic_2048)
        w5 = _nibble(words, 5, magic_128, magic_2048)
        w6 = _nibble(words, 6, magic_128, magic_2048)
        w7 = _nibble(words, 7, magic_128, magic_2048)
        for m in tl.static_range(ROWS):
            x_ptrs = (x_ptr + m * stride_xm
                      + tl.max_contiguous(tl.multiple_of(k0 + offs_c, C), C)[None, :])
            x0 = _load_x(x_ptrs, 0, C)
            x1 = _load_x(x_ptrs, 1, C)
            x2 = _load_x(x_ptrs, 2, C)
            x3 = _load_x(x_ptrs, 3, C)
            x4 = _load_x(x_ptrs, 4, C)
            x5 = _load_x(x_ptrs, 5, C)
            x6 = _load_x(x_ptrs, 6, C)
            x7 = _load_x(x_ptrs, 7, C)
            part = (w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3 + w4 * x4 + w5 * x5 + w6 * x6
                    + w7 * x7)
            # sum x w = sum x q + 2048 X_odd + 128 X_even; subtracting (128 + z) X and
            # 1920 X_odd leaves sum x (q - z), which the column's scale multiplies.
            x_odd = tl.sum(x1 + x3 + x5 + x7, 1, keep_dims=True)
            x_all = tl.sum(x0 + x2 + x4 + x6, 1, keep_dims=True) + x_odd
            dot = (tl.sum(part, 1, keep_dims=True) - 1920.0 * x_odd - zc * x_all) * scale
            acc = tl.where(rows == m, acc + dot, acc)
    mask = (rows < ROWS) & n_ok
    y, is_last = reduce_split_k(acc, ws_ptr + rows * N + offs_n, mask, lock_ptr + pid_n,
                                split_k, SPLIT)
    if is_last:
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + rows * stride_ym + offs_n, y.to(y_ptr.dtype.element_ty), mask=mask)


def launch(
    x: torch.Tensor,
    qweight_nk: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None,
    config: GemvConfig,
) -> torch.Tensor:
    """``x[M, K] @ w[K, N] (+ bias)`` for ``M`` up to :data:`MAX_ROWS`, with the weight in
    :func:`repack`'s layout (``qzeros`` and ``scales`` as AutoAWQ stores them), with explicit
    launch parameters (the entry point of ``scripts/bench_quant_linear.py``)."""
    m, k = x.shape
    n = qweight_nk.shape[0]
    expect(0 < m <= MAX_ROWS, f"the W4A16 GEMV takes 1 to {MAX_ROWS} rows, got {m}.")
    expect_dtype("x", x)
    expect(qweight_nk.dtype == torch.int32 and qweight_nk.shape == (n, k // 8),
           f"the repacked weight must be int32 [N, K/8={k // 8}], got {qweight_nk.dtype} "
           f"{tuple(qweight_nk.shape)}.")
    block = block_k(group_size, k)
    expect(block is not None, f"group_size {group_size} has no K block of 8 or more positions.")
    x = x if x.is_contiguous() else x.contiguous()
    qzeros, scales = rows_contiguous(qzeros), rows_contiguous(scales)
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    block_n = min(config.block_n, triton.next_power_of_2(n))
    k_per_split, splits = split_k_slices(k, config.split_k, block)
    tiles = triton.cdiv(n, block_n)
    block_m = triton.next_power_of_2(m)
    ws, locks = split_k_workspace(x.device, block_m * n if splits > 1 else 0,
                                  tiles if splits > 1 else 0)
    _awq_gemv_kernel[(tiles, splits)](
        x, qweight_nk, qzeros, scales, bias if bias is not None else y, y,
        ws.view(torch.float32), locks,
        n, k, splits, k_per_split, MAGIC_128, MAGIC_2048,
        x.stride(0), qweight_nk.stride(0), qzeros.stride(0), scales.stride(0), y.stride(0),
        ROWS=m,
        GROUP=group_size,
        HAS_BIAS=bias is not None,
        SPLIT=splits > 1,
        EVEN_N=n % block_n == 0,
        PREFETCH=config.prefetch,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block,
        num_warps=config.num_warps,
        num_stages=1,
    )
    return y
