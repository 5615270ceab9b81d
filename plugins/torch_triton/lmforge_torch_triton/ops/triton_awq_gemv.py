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
(:func:`_nibble`: three shifts and eight LOP3s per word).

A thread holds 16 bytes of a column's block (``VEC = 4`` words) and a column's ``C`` words
span ``L = C / 4`` lanes. The tile is split into ``VEC`` planes ``[BLOCK_N, L]`` (registers
only), and every value the loop keeps (per-row accumulators; zeros and scales, loaded once per
lane) is in that plane layout: no layout conversion, shared memory or shuffle in the loop; the
lanes of a column are added once, after it. Each unpacked nibble plane meets every row at
once, so one is live at a time. Two ways to apply the zero and scale (:data:`DEQUANT_ROWS` picks):

* few rows (:func:`_rows_offset`): a row's products of the offset floats run in FMA chains,
  and ``sum x (q - z) s = s (sum x w - 128 X_even - 2048 X_odd - z X)`` comes off once per
  block and lane from the row's activation sums; a weight costs one FMA per row besides its
  unpacking. (The 2048 offset costs up to 11 bits of a block's fp32 sum, which keeps 13;
  with fp32 activations the error is ~3e-5 of the output's size.)
* more rows (:func:`_rows_dequantized`): one FMA per weight makes ``(q - z) s`` and the rows'
  FMAs add straight into their accumulators: no per-row sums or corrections (~7e-6).

Issued instructions per weight in the loop, sm_90 SASS (``scripts/awq_gemv_instructions.py``,
256 columns, 4 warps; rows 1 / 2 / 4 / 8): 3.30 / 4.72 / 7.66 / 12.36, no shared memory or
spills (ptxas spills some at 3 and 5-7 rows); at 128 columns 3.59 / 5.32 / 8.36 / 13.82, and
no spills at any count. The kernel before this layout took 3.41 / 5.18 / 10.95 / 19.86, with
a conversion through shared memory per block, shuffles per row and spills from 4 rows. The
floor at one row is 2.4 (unpacking and the FMA); the rest is the zeros, scales and the
activations' loads, conversions and sums, which more columns per thread share.

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
# From this many rows on, the kernel dequantizes each weight once (an FMA) rather than
# correcting each row's sums per block (:func:`_rows_dequantized`).
DEQUANT_ROWS = tl.constexpr(3)
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
# --gemv-sweep` on an H200 measured the kernel faster than the AutoAWQ-layout one summed over the
# class's shapes (Llama-3-8B, group 128; benchmarks/RESULTS.md, run Y). At eight rows the
# tensor-core tiles still win (qkv 26.5 against 34.1 us), so that bucket has no entry.
CONFIGS: dict[tuple[int, str], GemvConfig] = {
    (1, "narrow"): GemvConfig(128, 16, 4, False),  # 20.5 us against 30.3 (qkv + o)
    (1, "wide"): GemvConfig(256, 5, 4, False),  # 33.6 us against 59.0 (gate_up)
    (1, "deep"): GemvConfig(256, 33, 4, False),  # 20.2 us against 32.0 (down)
    (2, "narrow"): GemvConfig(128, 16, 4, False),  # 27.0 us against 47.3
    (2, "wide"): GemvConfig(512, 2, 8, False),  # 50.1 us against 90.0
    (2, "deep"): GemvConfig(128, 16, 2, False),  # 26.9 us against 45.9
    (4, "narrow"): GemvConfig(256, 16, 4, False),  # 36.6 us against 47.0
    (4, "wide"): GemvConfig(16, 1, 2, False),  # 69.7 us against 90.1
    (4, "deep"): GemvConfig(256, 16, 4, False),  # 39.3 us against 45.8
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
    """Whether this kernel or the tensor-core matmul on the same repack
    (:mod:`.triton_awq_tc`) runs a ``[k, n]`` weight at some row count, i.e. whether loading
    should repack it."""
    from . import triton_awq_tc  # it imports this module

    cls = shape_class(n, k)
    return any(key[1] == cls for key in CONFIGS) or triton_awq_tc.wanted(n, k)


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
    """``w`` with the GEMV's repack added where :data:`CONFIGS` (or the tensor-core matmul's
    table) runs the kernel on its shape and the group size allows it; otherwise ``w`` itself.
    Called once per weight at load time."""
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
def _nibble_shifts(z, scale):
    """What a :func:`_nibble` float times ``scale`` plus the shift of its parity makes ``(q - z)
    s``: ``-(128 + z) s`` for even nibbles, ``-(2048 + z) s`` for odd ones."""
    return -(z + 128.0) * scale, -(z + 2048.0) * scale


@triton.jit
def _planes(t, VEC: tl.constexpr):
    """The ``VEC`` planes ``t[:, :, i]`` of a ``[rows, L, VEC]`` tile whose last axis lies in one
    thread (the 16-byte load of a column's words): register renaming, no data moves."""
    if VEC == 1:
        return (tl.reshape(t, [t.shape[0], t.shape[1]]),)
    elif VEC == 2:
        a, b = tl.split(t)
        return a, b
    else:
        even, odd = tl.split(tl.reshape(t, [t.shape[0], t.shape[1], 2, 2]))  # i = 2p + q
        p0, p2 = tl.split(even)
        p1, p3 = tl.split(odd)
        return p0, p1, p2, p3


@triton.jit
def _load_x(x_ptr, offs, pairs, VEC: tl.constexpr):
    """The ``VEC`` planes ``[1, L]`` in fp32 of the activations at ``x_ptr + offs`` (``offs``
    ``[1, L, VEC]``, as the words' tile). Every program reads the rows: keep them in cache. A
    bf16 pair is one int32 (at ``pairs``, ``[1, L, VEC / 2]``) whose halves become floats in one
    instruction each."""
    if x_ptr.dtype.element_ty == tl.bfloat16 and VEC % 2 == 0:
        words = _planes(tl.load(x_ptr.to(tl.pointer_type(tl.int32)) + pairs,
                                eviction_policy="evict_last").to(tl.uint32, bitcast=True), VEC // 2)
        out = ()
        for p in tl.static_range(VEC // 2):
            out = out + ((words[p] << 16).to(tl.float32, bitcast=True),
                         (words[p] & 0xFFFF0000).to(tl.float32, bitcast=True))
        return out
    return _planes(tl.load(x_ptr + offs, eviction_policy="evict_last").to(tl.float32), VEC)


@triton.jit
def _offset_nibble(chains, sums, planes, x_ptr, stride_xm, x_offs, x_pairs, magic_128,
                   magic_2048, j: tl.constexpr, FIRST: tl.constexpr, ROWS: tl.constexpr,
                   C: tl.constexpr, VEC: tl.constexpr):
    """Nibble ``j`` of :func:`_rows_offset`: the chains and the activation sums of ``j``'s
    parity take its products and its activations (``FIRST``: they start here)."""
    xs = ()
    for m in tl.static_range(ROWS):
        xs = xs + (_load_x(x_ptr + m * stride_xm + j * C, x_offs, x_pairs, VEC),)
    # Each unpacked plane meets every row at once: one plane is live.
    for i in tl.static_range(VEC):
        w = _nibble(planes[i], j, magic_128, magic_2048)
        new = ()
        for m in tl.static_range(ROWS):
            if FIRST and i == 0:
                new = new + (w * xs[m][i],)
            else:
                new = new + (chains[m] + w * xs[m][i],)
        chains = new
    new = ()
    for m in tl.static_range(ROWS):
        part = xs[m][0]
        for i in tl.static_range(1, VEC):
            part = part + xs[m][i]
        new = new + (part if FIRST else sums[m] + part,)
    return chains, new


@triton.jit
def _rows_offset(accs, planes, z, scale, x_ptr, stride_xm, x_offs, x_pairs, magic_128,
                 magic_2048, ROWS: tl.constexpr, C: tl.constexpr, VEC: tl.constexpr):
    """One K block for few rows: each row's products of the offset weights (``128 + q`` or
    ``2048 + q``) in FMA chains per lane, whose offsets and zero come off once per block from
    the row's activation sums, ``sum x (q - z) = sum x w - 128 X_even - 2048 X_odd - z X``,
    before the scale applies: a weight costs its unpacking and one FMA per row. Even and odd
    nibbles chain apart, so the larger offset rounds only its own half."""
    evens = ()
    odds = ()
    x_even = ()
    x_odd = ()
    # Nibbles 7, 0, 1, ..., 6: each shifted word serves its two nibbles back to back.
    for jj in tl.static_range(8):
        if jj % 2 == 1:
            evens, x_even = _offset_nibble(evens, x_even, planes, x_ptr, stride_xm, x_offs,
                                           x_pairs, magic_128, magic_2048, (jj + 7) % 8,
                                           jj < 2, ROWS, C, VEC)
        else:
            odds, x_odd = _offset_nibble(odds, x_odd, planes, x_ptr, stride_xm, x_offs, x_pairs,
                                         magic_128, magic_2048, (jj + 7) % 8, jj < 2, ROWS, C,
                                         VEC)
    new = ()
    for m in tl.static_range(ROWS):
        x_all = x_even[m] + x_odd[m]
        t = (evens[m] - 128.0 * x_even[m]) + (odds[m] - 2048.0 * x_odd[m]) - z * x_all
        new = new + (accs[m] + scale * t,)
    return new


@triton.jit
def _dequantized_nibble(accs, planes, scale, shift, x_ptr, stride_xm, x_offs, x_pairs,
                        magic_128, magic_2048, j: tl.constexpr, ROWS: tl.constexpr,
                        C: tl.constexpr, VEC: tl.constexpr):
    """Nibble ``j`` of :func:`_rows_dequantized`."""
    xs = ()
    for m in tl.static_range(ROWS):
        xs = xs + (_load_x(x_ptr + m * stride_xm + j * C, x_offs, x_pairs, VEC),)
    for i in tl.static_range(VEC):
        w = _nibble(planes[i], j, magic_128, magic_2048) * scale + shift
        new = ()
        for m in tl.static_range(ROWS):
            new = new + (accs[m] + w * xs[m][i],)
        accs = new
    return accs


@triton.jit
def _rows_dequantized(accs, planes, z, scale, x_ptr, stride_xm, x_offs, x_pairs, magic_128,
                      magic_2048, ROWS: tl.constexpr, C: tl.constexpr, VEC: tl.constexpr):
    """One K block for more rows: one FMA makes each weight ``(q - z) s`` from its offset
    float (``w s - (offset + z) s``), and every row's FMAs add straight into its accumulator:
    no per-row sums or corrections, at one instruction more per weight than
    :func:`_rows_offset`. (Rounding ``(2048 + z) s`` costs ~2**-13 of a weight's size.)"""
    even_shift, odd_shift = _nibble_shifts(z, scale)
    for jj in tl.static_range(8):  # nibbles 7, 0, 1, ..., 6, as in _rows_offset
        accs = _dequantized_nibble(accs, planes, scale, odd_shift if jj % 2 == 0 else even_shift,
                                   x_ptr, stride_xm, x_offs, x_pairs, magic_128, magic_2048,
                                   (jj + 7) % 8, ROWS, C, VEC)
    return accs


@triton.jit
def _load_block(w_ptrs, z_ptrs, s_ptrs, k, n_ok, n_ok3, stride_zg, stride_sg,
                GROUP: tl.constexpr, EVEN_N: tl.constexpr, C: tl.constexpr):
    """The words ``[BLOCK_N, L, VEC]`` of the K block at ``k`` with its group's packed zeros and
    scales (``[BLOCK_N, L]`` each)."""
    group = k // GROUP
    w_ptrs = w_ptrs + tl.multiple_of(k // 8, C)
    z_ptrs = z_ptrs + group * stride_zg
    s_ptrs = s_ptrs + group * stride_sg
    if EVEN_N:
        zw = tl.load(z_ptrs)
        scale = tl.load(s_ptrs)
        # Each packed byte is read once: let it leave the cache first.
        words = tl.load(w_ptrs, eviction_policy="evict_first")
    else:
        zw = tl.load(z_ptrs, mask=n_ok, other=0)
        scale = tl.load(s_ptrs, mask=n_ok, other=0.0)
        words = tl.load(w_ptrs, mask=n_ok3, other=0, eviction_policy="evict_first")
    return words, zw, scale


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
    # A column's C words of a block as [L, VEC]: VEC (up to 4, 16 bytes) in one thread, L lanes.
    VEC: tl.constexpr = 4 if C >= 4 else C
    L: tl.constexpr = C // VEC
    DEQUANT: tl.constexpr = ROWS >= DEQUANT_ROWS
    pid_n = tl.program_id(0)
    # Columns in the order (0, BN/2, 1, BN/2 + 1, ...): with no two neighbours in a row, the
    # per-column loads are not vectorized along the columns, so they land in the layout of the
    # words' planes (one column per lane group) with no conversion between them in the loop.
    r = tl.arange(0, BLOCK_N)
    offs_n = pid_n * BLOCK_N + (r % 2) * (BLOCK_N // 2) + r // 2
    n_ok = offs_n[:, None] < N
    offs_c = (tl.arange(0, L)[:, None] * VEC + tl.arange(0, VEC)[None, :])[None, :, :]
    # The same positions in pairs (int32 units), for bf16 rows.
    offs_pair = (tl.arange(0, L)[:, None] * (VEC // 2)
                 + tl.arange(0, (VEC + 1) // 2)[None, :])[None, :, :]
    k_begin = tl.program_id(1) * k_per_split
    k_end = tl.minimum(k_begin + k_per_split, K)
    w_ptrs = qw_ptr + offs_n[:, None, None].to(tl.int64) * stride_qn + offs_c
    n_ok3 = offs_n[:, None, None] < N
    # Per-column values as [BLOCK_N, L] (each lane group of a column loads them).
    n_l = tl.broadcast_to(offs_n[:, None], [BLOCK_N, L])
    n_ok_l = n_l < N
    # Column j of a group of 8 keeps its zero in nibble j // 2 + 4 (j % 2) (AutoAWQ's order):
    col = n_l % 8
    z_bit = (4 * (col // 2 + 4 * (col % 2))).to(tl.uint32)
    z_ptrs = qz_ptr + n_l // 8
    s_ptrs = s_ptr + n_l
    accs = ()
    for _ in tl.static_range(ROWS):
        accs = accs + (tl.zeros([BLOCK_N, L], dtype=tl.float32),)
    if PREFETCH:
        words_next, zw_next, scale_next = _load_block(w_ptrs, z_ptrs, s_ptrs, k_begin, n_ok_l,
                                                      n_ok3, stride_zg, stride_sg, GROUP,
                                                      EVEN_N, C)
    for k0 in range(k_begin, k_end, BLOCK_K):
        if PREFETCH:
            words, zw, scale = words_next, zw_next, scale_next
            words_next, zw_next, scale_next = _load_block(
                w_ptrs, z_ptrs, s_ptrs, tl.minimum(k0 + BLOCK_K, k_end - BLOCK_K), n_ok_l, n_ok3,
                stride_zg, stride_sg, GROUP, EVEN_N, C)
        else:
            words, zw, scale = _load_block(w_ptrs, z_ptrs, s_ptrs, k0, n_ok_l, n_ok3, stride_zg,
                                           stride_sg, GROUP, EVEN_N, C)
        z = ((zw.to(tl.uint32, bitcast=True) >> z_bit) & 0xF).to(tl.float32)
        scale = scale.to(tl.float32)
        planes = _planes(words.to(tl.uint32, bitcast=True), VEC)
        k_words = tl.multiple_of(k0 // 8, C)
        x_offs = 8 * k_words + offs_c
        x_pairs = 4 * k_words + offs_pair
        if DEQUANT:
            accs = _rows_dequantized(accs, planes, z, scale, x_ptr, stride_xm, x_offs, x_pairs,
                                     magic_128, magic_2048, ROWS, C, VEC)
        else:
            accs = _rows_offset(accs, planes, z, scale, x_ptr, stride_xm, x_offs, x_pairs,
                                magic_128, magic_2048, ROWS, C, VEC)
    rows = tl.arange(0, BLOCK_M)[None, :]
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    for m in tl.static_range(ROWS):
        acc = tl.where(rows == m, tl.sum(accs[m], 1, keep_dims=True), acc)
    mask = (rows < ROWS) & n_ok
    y, is_last = reduce_split_k(acc, ws_ptr + rows * N + offs_n[:, None], mask,
                                lock_ptr + pid_n, split_k, SPLIT)
    if is_last:
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_n[:, None], mask=n_ok, other=0.0).to(tl.float32)
        tl.store(y_ptr + rows * stride_ym + offs_n[:, None], y.to(y_ptr.dtype.element_ty),
                 mask=mask)


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
