"""W4A16 tensor-core matmul for 8 to 255 rows on the GEMV's K-major repack, as ``(W^T x^T)^T``.

At 16-64 rows a decode step's matmuls are still bound by the weights' bytes, and 4-bit weights
are a quarter of bf16's; but a tile of ``M`` rows is too narrow for the MMA's M side (64 per
warpgroup on Hopper). So the weight is the MMA's first operand: each program owns ``BLOCK_N``
output columns (M side) and ``BLOCK_M`` rows (N side, 16 to 128), and computes
``acc[BLOCK_N, BLOCK_M] += W^T[BLOCK_N, BLOCK_K] @ x^T[BLOCK_K, BLOCK_M]`` walking K in blocks
inside one quantization group.

The weight operand comes from :func:`.triton_awq_gemv.repack`'s words ``[N, K/8]`` (within a
repack block of ``8C`` positions, nibble ``j`` of word ``c`` holds position ``j * C + c``). A
program loads ``KW = BLOCK_K / 8`` words per column, unpacks each nibble plane with the GEMV's
magic floats (:func:`.triton_awq_gemv._nibble`) and dequantizes it with one FMA, exactly
``(q - z) s`` in fp32, then rounds to the activation dtype as the reference does. The eight
planes combine with ``tl.join`` (a new per-thread minor axis) and a permute and reshape, all
register renaming, into ``[BLOCK_N, BLOCK_K]`` whose K index ``t`` is

    t = (kw // W) * 8W + j * W + kw % W        (W = min(8, KW))

for nibble ``j`` of loaded word ``kw``: a fixed permutation of positions. A dot sums over K, so
rather than moving weights the activations' rows load in the same order (:func:`_positions`):
``W`` neighbouring ``t`` are neighbouring positions, so ``x^T`` loads in 16-byte pieces and the
software pipeliner (``num_stages``) copies it asynchronously as a plain dot operand. The order
also matches Hopper's register fragment of A (``t`` bits 1-2 on the lanes of a quad, bit 0 and
bits 3 up in registers), and the words load in an order whose default layout is that fragment's
(:func:`_word_offsets`), so the unpacked tile feeds ``wgmma`` from registers: no shared memory
between the words and the MMA. (With the words as a plain ``[BLOCK_N, KW]`` tile, Triton
converted the 16-bit tile through shared memory every block: 37 STS and 17 LDSM a thread.)

Issued instructions per weight in the loop, sm_90 SASS (``scripts/awq_tc_instructions.py``:
128 columns, K steps of 128, 4 warps, 4 stages; 16 / 64 rows): 4.23 / 4.37, no spills, no
shared-memory stores or ldmatrix in the loop; per thread and step of 128 weights, 128 FFMA,
~140 LOP3 and 64 F2FP (the dequantization, ~2.6 a weight) and 16 HGMMA. Streaming 4-bit
weights at ~4 TB/s leaves an H200 ~4.2 issue slots per weight, so 16 rows sit near both
limits.

Small grids split K over several programs per tile (:mod:`.triton_quant_common`). fp32
activations are not taken (:func:`takes`): the AutoAWQ-layout kernel runs them.
:data:`CONFIGS` says where the kernel runs; where it has no entry, other kernels do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .triton_awq_dequant import rows_contiguous
from .triton_awq_gemv import MAGIC_128, MAGIC_2048, _nibble, _nibble_shifts, block_k
from .triton_common import expect
from .triton_quant_common import reduce_split_k, shape_class, split_k_slices, split_k_workspace

# The most rows: from triton_awq.DEQUANT_MIN_ROWS on, dequantizing once for cuBLAS wins.
MAX_ROWS = 255
# The smallest K block: one MMA step of 16-bit operands.
MIN_BLOCK_K = 16
ROW_BUCKETS = (16, 32, 64, 128, 256)
DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class TcConfig:
    """Launch parameters of the W4A16 tensor-core matmul for one row bucket and shape class."""

    block_n: int  # output columns per program: the MMA's M side (64 per warpgroup)
    block_m: int  # rows per program: the MMA's N side (16 to 128)
    block_k: int  # K step; capped at the repack block (the group, at most 128)
    split_k: int  # programs that share each output tile, each over its own slice of K
    num_warps: int
    num_stages: int


# Keys: the row bucket (:func:`row_bucket`) and the shape class
# (:func:`.triton_quant_common.shape_class`): an entry where `scripts/bench_quant_linear.py
# --tc-sweep` on an H200 measured the kernel faster than the AutoAWQ-layout one summed over the
# class's shapes (Llama-3-8B, group 128; benchmarks/RESULTS.md, run Z). It wins at 32 rows and on
# the wide class at 128; at 16, 64 and 255 rows the AutoAWQ-layout kernel stays faster (e.g.
# 64 rows: down 56.7 against 84.2 us), and both stay well below bf16's cuBLAS.
CONFIGS: dict[tuple[int, str], TcConfig] = {
    (32, "narrow"): TcConfig(64, 32, 64, 4, 4, 3),  # 67.8 us against 90.3 (qkv + o)
    (32, "wide"): TcConfig(128, 32, 128, 1, 8, 3),  # 114.3 us against 146.3 (gate_up)
    (32, "deep"): TcConfig(128, 32, 128, 8, 8, 3),  # 68.1 us against 78.8 (down)
    (128, "wide"): TcConfig(128, 128, 128, 1, 8, 3),  # 203.5 us against 227.3
}


def row_bucket(m: int) -> int:
    """The launch-table bucket of ``m`` rows (``m`` at most :data:`MAX_ROWS`)."""
    return next(b for b in ROW_BUCKETS if m <= b)


def pick_config(m: int, n: int, k: int) -> TcConfig | None:
    """Launch parameters for ``m`` rows of a ``[k, n]`` weight, or None where the kernel does
    not run."""
    if not 0 < m <= MAX_ROWS:
        return None
    return CONFIGS.get((row_bucket(m), shape_class(n, k)))


def wanted(n: int, k: int) -> bool:
    """Whether the kernel runs a ``[k, n]`` weight at some row count (so loading repacks it)."""
    cls = shape_class(n, k)
    return any(key[1] == cls for key in CONFIGS)


def takes(x: torch.Tensor, group_size: int) -> bool:
    """Whether the kernel handles these activations and this group size."""
    block = block_k(group_size, x.shape[-1])
    return x.dtype in DTYPES and block is not None and block >= MIN_BLOCK_K


def tc_config(x: torch.Tensor, w) -> TcConfig | None:
    """The kernel's launch parameters for ``x @ w`` (an AWQ weight), or None where another
    kernel runs."""
    if getattr(w, "qweight_nk", None) is None or x.dim() != 2 or not takes(x, w.group_size):
        return None
    return pick_config(x.shape[0], w.out_features, w.in_features)


@triton.jit
def _positions(BLOCK_K: tl.constexpr, C: tl.constexpr, W: tl.constexpr):
    """The position (inside its repack block, less the first loaded word's) of each K index
    ``t`` of the unpacked tile: ``t = (kw // W) 8W + j W + kw % W`` holds nibble ``j`` of
    loaded word ``kw``, which sits at ``j C + kw``."""
    t = tl.arange(0, BLOCK_K)
    pos = (t // (8 * W)) * W + ((t // W) % 8) * C + t % W
    # Runs of W: 16-byte pieces of 16-bit rows at W = 8.
    return tl.max_contiguous(tl.multiple_of(pos, W), W)


@triton.jit
def _weight_tile(words, z, scale, magic_128, magic_2048, DTYPE: tl.constexpr):
    """Words ``[KWH, 2, RHH, RW, 8, KWL, 2]`` (:func:`_word_offsets`) -> the dequantized
    ``[BLOCK_N, 8 KW]`` tile in ``DTYPE``, K in :func:`_positions`' order. A nibble's magic
    float ``128 + q`` (even ``j``) or ``2048 + q`` (odd) becomes ``(q - z) s`` in one FMA,
    exactly (at most 12 bits times a 16-bit float's 11), so the rounding to ``DTYPE`` is the
    reference's."""
    even_shift, odd_shift = _nibble_shifts(z, scale)
    p = ()
    for j in tl.static_range(8):
        w = _nibble(words, j, magic_128, magic_2048)
        p = p + ((w * scale + (odd_shift if j % 2 else even_shift)).to(DTYPE),)
    # [..., a, b, c] holds nibble 4a + 2b + c: per-thread axes, no data moves.
    t = tl.join(tl.join(tl.join(p[0], p[4]), tl.join(p[2], p[6])),
                tl.join(tl.join(p[1], p[5]), tl.join(p[3], p[7])))
    # Columns (RHH, RW, RHL, RL); K as (KWH, j, KWL, KW0).
    t = tl.permute(t, (2, 3, 1, 4, 0, 7, 8, 9, 5, 6))
    return tl.reshape(t, (t.shape[0] * t.shape[1] * t.shape[2] * t.shape[3],
                          t.shape[4] * 8 * t.shape[8] * t.shape[9]))


@triton.jit
def _axis(SIZE: tl.constexpr, DIM: tl.constexpr):
    """``arange(SIZE)`` along axis ``DIM`` of a 7-D tensor."""
    r = tl.arange(0, SIZE)
    if DIM == 0:
        return r[:, None, None, None, None, None, None]
    elif DIM == 1:
        return r[None, :, None, None, None, None, None]
    elif DIM == 2:
        return r[None, None, :, None, None, None, None]
    elif DIM == 3:
        return r[None, None, None, :, None, None, None]
    elif DIM == 4:
        return r[None, None, None, None, :, None, None]
    elif DIM == 5:
        return r[None, None, None, None, None, :, None]
    else:
        return r[None, None, None, None, None, None, :]


@triton.jit
def _word_offsets(BLOCK_N: tl.constexpr, KW: tl.constexpr):
    """``(column, word)`` of a K block's words as ``[KWH, 2, RHH, RW, 8, KWL, 2]``: column
    ``RL + 8 RHL + 16 RW + 16 RW_SIZE RHH``, word ``(KWH KWL_SIZE + KWL) 2 + KW0``. The axes
    are in the order Triton's default layout fills them (last fastest: two words per thread,
    then lanes over KWL and RL, warps over RW and then RHH, registers for the rest), which is
    Hopper's register fragment of A once :func:`_weight_tile` has put them in order."""
    KWL: tl.constexpr = 4 if KW >= 8 else KW // 2
    KWH: tl.constexpr = KW // (2 * KWL)
    RW: tl.constexpr = 4 if BLOCK_N >= 64 else BLOCK_N // 16
    RHH: tl.constexpr = BLOCK_N // (16 * RW)
    col = ((_axis(RHH, 2) * RW + _axis(RW, 3)) * 2 + _axis(2, 1)) * 8 + _axis(8, 4)
    word = (_axis(KWH, 0) * KWL + _axis(KWL, 5)) * 2 + _axis(2, 6)
    return col, word


@triton.jit
def _by_word(v, BLOCK_N: tl.constexpr):
    """A per-column ``[BLOCK_N]`` vector as ``[1, 2, RHH, RW, 8, 1, 1]``, to meet
    :func:`_word_offsets`' words."""
    RW: tl.constexpr = 4 if BLOCK_N >= 64 else BLOCK_N // 16
    RHH: tl.constexpr = BLOCK_N // (16 * RW)
    v = tl.permute(tl.reshape(v, (RHH, RW, 2, 8)), (2, 0, 1, 3))
    return v[None, :, :, :, :, None, None]


# The split count is a plain runtime value: a kernel compiled for one serves every count.
# M only bounds the row masks (EVEN_M drops them), so its divisibility is not specialized on:
# decode graphs and prompt buckets capture many row counts at warm-up, each a compile otherwise.
@triton.jit(do_not_specialize=["M", "split_k", "k_per_split", "magic_128", "magic_2048"])
def _awq_tc_kernel(
    x_ptr, qw_ptr, qz_ptr, s_ptr, bias_ptr, y_ptr, ws_ptr, lock_ptr,
    M, N, K, split_k, k_per_split, magic_128, magic_2048,
    stride_xm, stride_qn, stride_zg, stride_sg, stride_ym,
    GROUP: tl.constexpr,
    REPACK_K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    EVEN_M: tl.constexpr,
    EVEN_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    KW: tl.constexpr = BLOCK_K // 8  # words per column per step
    W: tl.constexpr = 8 if KW >= 8 else KW  # neighbouring positions in a run of K indices
    C: tl.constexpr = REPACK_K // 8  # words per column per repack block
    dtype = x_ptr.dtype.element_ty
    # Row tiles of one column tile run next to each other: they share its weights in L2.
    tiles_m = tl.cdiv(M, BLOCK_M)
    pid_n = tl.program_id(0) // tiles_m
    pid_m = tl.program_id(0) % tiles_m
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n_ok = offs_n < N
    col, word = _word_offsets(BLOCK_N, KW)
    col = pid_n * BLOCK_N + col
    w_ptrs = qw_ptr + col.to(tl.int64) * stride_qn + word
    col_ok = col < N
    # Zeros and scales load per column in order (their own layout, met by one conversion of a
    # vector, not of the words): column j of a group of 8 keeps its zero in nibble
    # j // 2 + 4 (j % 2) (AutoAWQ's order).
    z_bit = (4 * ((offs_n % 8) // 2 + 4 * (offs_n % 2))).to(tl.uint32)
    z_ptrs = qz_ptr + offs_n // 8
    s_ptrs = s_ptr + offs_n
    x_ptrs = x_ptr + rows[None, :] * stride_xm + _positions(BLOCK_K, C, W)[:, None]
    k_begin = tl.program_id(1) * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for k0 in range(k_begin, k_end, BLOCK_K):
        group = k0 // GROUP
        # The repack block's first position and the first loaded word's offset in it: a
        # multiple of W, so the rows load in W-position pieces.
        base = tl.multiple_of((k0 // REPACK_K) * REPACK_K + (k0 // 8) % C, W)
        wp = w_ptrs + tl.multiple_of(k0 // 8, KW)
        if EVEN_N:
            words = tl.load(wp, eviction_policy="evict_first")
            zw = tl.load(z_ptrs + group * stride_zg)
            scale = tl.load(s_ptrs + group * stride_sg)
        else:
            words = tl.load(wp, mask=col_ok, other=0, eviction_policy="evict_first")
            zw = tl.load(z_ptrs + group * stride_zg, mask=n_ok, other=0)
            scale = tl.load(s_ptrs + group * stride_sg, mask=n_ok, other=0.0)
        z = ((zw.to(tl.uint32, bitcast=True) >> z_bit) & 0xF).to(tl.float32)
        a = _weight_tile(words.to(tl.uint32, bitcast=True), _by_word(z, BLOCK_N),
                         _by_word(scale.to(tl.float32), BLOCK_N), magic_128, magic_2048, dtype)
        # Every program reads the rows: keep them in cache.
        if EVEN_M:
            xt = tl.load(x_ptrs + base, eviction_policy="evict_last")
        else:
            xt = tl.load(x_ptrs + base, mask=rows[None, :] < M, other=0.0,
                         eviction_policy="evict_last")
        acc = tl.dot(a, xt, acc)
    mask = (rows[None, :] < M) & n_ok[:, None]
    lock = lock_ptr + tl.program_id(0)
    y, is_last = reduce_split_k(acc, ws_ptr + rows[None, :] * N + offs_n[:, None], mask, lock,
                                split_k, SPLIT)
    if is_last:
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[:, None]
        tl.store(y_ptr + rows[None, :] * stride_ym + offs_n[:, None], y.to(y_ptr.dtype.element_ty),
                 mask=mask)


def launch(
    x: torch.Tensor,
    qweight_nk: torch.Tensor,
    qzeros: torch.Tensor,
    scales: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None,
    config: TcConfig,
) -> torch.Tensor:
    """``x[M, K] @ w[K, N] (+ bias)`` for 16-bit ``x`` of up to :data:`MAX_ROWS` rows, with the
    weight in :func:`.triton_awq_gemv.repack`'s layout (``qzeros`` and ``scales`` as AutoAWQ
    stores them), with explicit launch parameters (the entry point of
    ``scripts/bench_quant_linear.py``)."""
    m, k = x.shape
    n = qweight_nk.shape[0]
    expect(0 < m <= MAX_ROWS, f"the W4A16 tensor-core matmul takes 1 to {MAX_ROWS} rows, "
           f"got {m}.")
    expect(x.dtype in DTYPES, f"the W4A16 tensor-core matmul takes fp16 or bf16 rows, got "
           f"{x.dtype}.")
    expect(qweight_nk.dtype == torch.int32 and qweight_nk.shape == (n, k // 8),
           f"the repacked weight must be int32 [N, K/8={k // 8}], got {qweight_nk.dtype} "
           f"{tuple(qweight_nk.shape)}.")
    repack_k = block_k(group_size, k)
    expect(repack_k is not None and repack_k >= MIN_BLOCK_K,
           f"group_size {group_size} has no K block of {MIN_BLOCK_K} or more positions.")
    x = rows_contiguous(x)
    qzeros, scales = rows_contiguous(qzeros), rows_contiguous(scales)
    y = torch.empty(m, n, dtype=x.dtype, device=x.device)
    step = max(MIN_BLOCK_K, min(config.block_k, repack_k))
    block_n = max(16, min(config.block_n, triton.next_power_of_2(n)))
    block_m = max(16, min(config.block_m, triton.next_power_of_2(m)))
    k_per_split, splits = split_k_slices(k, config.split_k, step)
    tiles = triton.cdiv(n, block_n) * triton.cdiv(m, block_m)
    ws, locks = split_k_workspace(x.device, m * n if splits > 1 else 0,
                                  tiles if splits > 1 else 0)
    _awq_tc_kernel[(tiles, splits)](
        x, qweight_nk, qzeros, scales, bias if bias is not None else y, y,
        ws.view(torch.float32), locks,
        m, n, k, splits, k_per_split, MAGIC_128, MAGIC_2048,
        x.stride(0), qweight_nk.stride(0), qzeros.stride(0), scales.stride(0), y.stride(0),
        GROUP=group_size,
        REPACK_K=repack_k,
        HAS_BIAS=bias is not None,
        SPLIT=splits > 1,
        EVEN_M=m % block_m == 0,
        EVEN_N=n % block_n == 0,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=step,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
    )
    return y
