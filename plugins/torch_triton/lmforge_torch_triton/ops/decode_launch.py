"""Launch choices of the paged decode attention kernel (``triton_decode_attention.py``): the
split-K factor, the tokens per K/V tile and, for a quantized cache, how codes reach the MMAs.
They depend on shapes alone, so a decode step never syncs with the device and stays capturable
in a CUDA graph."""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton

from .triton_common import num_sms


class KernelConfig(NamedTuple):
    """The main kernel's launch config: tokens per K/V tile, warps, pipeline stages and, for a
    quantized cache, the index in :data:`CODE_VARIANTS` of how it reads the codes."""

    block_n: int
    num_warps: int
    num_stages: int
    variant: int = 0


# How the kernel reads a quantized cache's codes (its VARIANT constexpr), by index: "words"
# unpacks int32 words of four codes (triton_kv_quant.load_codes), "bytes" converts byte tiles
# element by element, "pairs" reads int8 codes as uint16 words of two and "f16pairs" as float16
# bit patterns, which shared memory serves with ldmatrix (int4 codes as "bytes" in both; all in
# triton_kv_bytes). Unquantized caches ignore it.
CODE_VARIANTS = ("words", "bytes", "pairs", "f16pairs")

# Defaults by whether sequences are split. 64 rows x 128 dims of bf16 is 16 KiB per operand:
# with 3 stages (the next tiles' loads overlap this tile's math) it fits an H100/H200 SM's shared
# memory beside 3-4 resident programs. Without splits (large batches, many programs per SM) 2
# warps measured 2-4 % faster than 4 on an H200; with splits 4.
_CONFIGS = {False: KernelConfig(64, 2, 3), True: KernelConfig(64, 4, 3)}
# Quantized caches, by policy and whether sequences are split. A quantized tile's codes are a
# half or a quarter of bf16's bytes, so with splits (small batches) 128-row word tiles won (int8,
# batch 1, context 2,048: 10.1 against 11.5 us). Without splits, the code-variant sweep on an H200
# (scripts/bench_decode_attention.py, Llama-3-8B's heads, context 2,048; benchmarks/RESULTS.md,
# run W) picked 64 rows at 2 warps: int8 as float16 bit-pattern pairs (batch 256: 401 against
# 463 us for word tiles and ~480 for bf16; batch 64: 99.9 against 119.7) and int4 as bytes with
# 2 stages (batch 256: 423 against 521; batch 64: 108 against 135).
_QUANT_CONFIGS = {
    (8, False): KernelConfig(64, 2, 3, CODE_VARIANTS.index("f16pairs")),
    (8, True): KernelConfig(128, 4, 3, 0),
    (4, False): KernelConfig(64, 2, 2, CODE_VARIANTS.index("bytes")),
    (4, True): KernelConfig(128, 4, 3, 0),
}
# Measured on an H200 (scripts/bench_decode_attention.py): at batch 1-4, 16 splits beat 33 by
# 5-20 % at 256-2048 tokens (the merge grows with the count), and fewer only win below ~300.
MAX_SPLITS = 16


def kernel_config(quant_policy: int, num_splits: int = 1) -> KernelConfig:
    """The main kernel's default launch config at ``quant_policy`` and ``num_splits``."""
    if quant_policy:
        return _QUANT_CONFIGS[quant_policy, num_splits > 1]
    return _CONFIGS[num_splits > 1]


def choose_launch(batch: int, num_kv_heads: int, max_context: int, device: torch.device,
                  quant_policy: int = 0, sliding_window: int | None = None) -> tuple[int, int]:
    """``(num_splits, block_n)`` for a decode step: the splits :func:`choose_num_splits` picks
    over unsplit tiles, then the tile :func:`kernel_config` gives for them (and the splits
    again over that tile's count)."""
    def splits(block_n: int) -> int:
        span = max_context if sliding_window is None else min(max_context,
                                                               sliding_window + block_n)
        return choose_num_splits(batch, num_kv_heads, span, device, block_n)

    first = kernel_config(quant_policy).block_n
    num_splits = splits(first)
    block_n = kernel_config(quant_policy, num_splits).block_n
    return (num_splits if block_n == first else splits(block_n)), block_n


def choose_num_splits(batch: int, num_kv_heads: int, max_context: int, device: torch.device,
                      block_n: int = 64) -> int:
    """Splits per (sequence, KV head) so the grid fills the GPU about four times over, at most
    :data:`MAX_SPLITS`; none once the batch alone gives every SM two programs, and never more
    than ``max_context`` has tiles of ``block_n`` tokens. Each sequence divides its own tiles
    among the splits, so the count holds for any context length."""
    programs = batch * num_kv_heads
    if programs >= 2 * num_sms(device):
        return 1
    wanted = triton.cdiv(4 * num_sms(device), programs)
    return max(1, min(wanted, triton.cdiv(max_context, block_n), MAX_SPLITS))
