"""The paged K/V pool: its layout for each ``quant_policy``, its size, and the reference
quantization that the Triton store kernel is tested against.

Per layer, K and V each have a code tensor ``[NB, BS, nkv, D]`` addressed as the block manager
hands out blocks: position ``p`` of a sequence lives in block ``block_tables[b][p // BS]`` at
row ``p % BS``.

- ``quant_policy=0``: the codes are the values, in the model dtype; ``D = head_dim``.
- ``quant_policy=8``: ``uint8`` codes, ``D = head_dim``.
- ``quant_policy=4``: ``uint8``, ``D = head_dim / 2``, two 4-bit codes per byte: byte ``j``
  holds dimension ``j`` in its low nibble and dimension ``j + head_dim / 2`` in its high nibble.
  These are the two halves that the rotary embedding rotates together, so the store kernel packs
  the pair it has just computed.

A quantized layer also has ``k_scales_zeros`` and ``v_scales_zeros``: float32
``[NB, BS, nkv, 2]``, the same block id and row as the codes, holding ``(scale, zero)`` of each
token and K/V head. The quantization is asymmetric, per token and head, made as tokens are
written: ``zero = min(x)``, ``scale = (max(x) - min(x)) / (2**bits - 1)`` (1 when all values are
equal), ``code = floor((x - zero) / scale + 0.5)``, and ``x ~= code * scale + zero``. float32
keeps the zero exact for values far from 0; it costs 8 bytes per token and head against the
codes' 128 (int8) or 64 (int4) at head_dim 128, so the pool still holds 1.88x / 3.56x the bf16
tokens in the same memory.

At ``quant_policy=4`` keys are stored in a Hadamard basis when ``head_dim`` is a power of two
(32 or more): the codes hold ``k @ H`` for the normalized Sylvester Hadamard matrix ``H``, and
the rotary kernel returns the queries as ``q @ H``, so ``q . k`` is unchanged. A few channels of
a key carry most of its magnitude; with one scale per token and head they would leave 4 bits
too coarse for the rest, and the rotation spreads them over every dimension first (on the demo
model it halves int4's perplexity loss). Values are stored as they are.

What attention sees, on the Triton and the PyTorch path alike: a decode reads every position
from the cache; a prefill step (a prompt, or one chunk of it) attends to its own tokens as it
computed them, unquantized, and to its cached prefix (earlier chunks, a prefix-cache hit) as the
cache holds it. A prompt without a cached prefix thus never pays for dequantization, and its
prefill is as accurate as at ``quant_policy=0``; the price is that where chunks or a prefix hit
split a prompt changes its logits by the quantization error of the part read from the cache.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from lmforge.errors import ConfigError
from lmforge.model.config import ModelConfig

QUANT_POLICIES = (0, 4, 8)
# Bytes of one token's (scale, zero) pair for one K/V head.
SCALES_ZEROS_BYTES = 2 * 4


@dataclass
class LayerKVCache:
    """One layer's share of the pool; ``k_scales_zeros`` and ``v_scales_zeros`` are None at
    ``quant_policy=0``."""

    k: torch.Tensor
    v: torch.Tensor
    k_scales_zeros: torch.Tensor | None = None
    v_scales_zeros: torch.Tensor | None = None
    quant_policy: int = 0

    @property
    def quant_args(self) -> dict:
        """The keyword arguments the cache ops take for this layout (none at policy 0, so the
        unquantized calls stay exactly what they were)."""
        if not self.quant_policy:
            return {}
        return dict(k_scales_zeros=self.k_scales_zeros, v_scales_zeros=self.v_scales_zeros,
                    quant_policy=self.quant_policy)


def code_dim(head_dim: int, quant_policy: int) -> int:
    """The last dimension of a code tensor."""
    return head_dim // 2 if quant_policy == 4 else head_dim


def bytes_per_token(config: ModelConfig, dtype: torch.dtype, quant_policy: int) -> int:
    """K and V of one token across all layers, scales and zeros included."""
    per_head = config.head_dim * dtype.itemsize
    if quant_policy:
        per_head = code_dim(config.head_dim, quant_policy) + SCALES_ZEROS_BYTES
    return 2 * config.num_layers * config.num_kv_heads * per_head


def check_head_dim(head_dim: int, quant_policy: int) -> None:
    """Refuse a head whose codes are not whole 4-byte words, the unit the GPU kernels read:
    int8 needs a head_dim multiple of 4, int4 of 8."""
    multiple = {8: 4, 4: 8}.get(quant_policy, 1)
    if head_dim % multiple:
        raise ConfigError(
            f"Invalid value for quant_policy: {quant_policy} needs a head_dim that is a multiple "
            f"of {multiple}, and this model's is {head_dim}; use quant_policy "
            f"{8 if head_dim % 4 == 0 else 0}."
        )


def allocate(config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype,
             quant_policy: int, device: torch.device) -> list[LayerKVCache]:
    """A zeroed pool: zeros are finite, so reading a padded table row never brings a NaN in."""
    check_head_dim(config.head_dim, quant_policy)
    shape = (num_blocks, block_size, config.num_kv_heads)
    d = code_dim(config.head_dim, quant_policy)
    code_dtype = torch.uint8 if quant_policy else dtype

    def zeros(last: int, dt: torch.dtype) -> torch.Tensor:
        return torch.zeros(*shape, last, dtype=dt, device=device)

    if not quant_policy:
        return [LayerKVCache(zeros(d, dtype), zeros(d, dtype)) for _ in range(config.num_layers)]
    return [
        LayerKVCache(zeros(d, code_dtype), zeros(d, code_dtype), zeros(2, torch.float32),
                     zeros(2, torch.float32), quant_policy)
        for _ in range(config.num_layers)
    ]


def rotates_keys(quant_policy: int, head_dim: int) -> bool:
    """Whether keys are stored in the Hadamard basis (see the module docstring)."""
    return quant_policy == 4 and head_dim >= 32 and head_dim & (head_dim - 1) == 0


@functools.cache
def hadamard(n: int, device: torch.device) -> torch.Tensor:
    """The normalized Sylvester Hadamard matrix of size ``n`` (a power of two), float32: symmetric
    and orthogonal, ``H[i, j] = (-1) ** popcount(i & j) / sqrt(n)``."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    return (h / n**0.5).to(torch.float32).to(device)


def to_key_basis(x: torch.Tensor, quant_policy: int) -> torch.Tensor:
    """``x: [..., head_dim]`` (keys or queries) in the basis the cache stores keys in, float32."""
    d = x.shape[-1]
    if not rotates_keys(quant_policy, d):
        return x.float()
    return x.float() @ hadamard(d, x.device)


def quantize(x: torch.Tensor, quant_policy: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``[..., D]`` (uint8) and ``(scale, zero)`` ``[..., 2]`` (float32) of ``x: [..., d]``,
    one pair per row of ``x`` (see the module docstring)."""
    qmax = 2**quant_policy - 1
    xf = x.float()
    low, high = xf.amin(-1, keepdim=True), xf.amax(-1, keepdim=True)
    scale = (high - low) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    # x >= low exactly, so the codes are non-negative and the cast truncates to the floor.
    codes = torch.clamp((xf - low) / scale + 0.5, max=qmax).to(torch.uint8)
    if quant_policy == 4:
        low_half, high_half = codes.chunk(2, dim=-1)
        codes = low_half | (high_half << 4)
    return codes, torch.cat([scale, low], dim=-1)


def dequantize(codes: torch.Tensor, scales_zeros: torch.Tensor, quant_policy: int) -> torch.Tensor:
    """float32 values ``[..., d]`` from :func:`quantize`'s codes and ``(scale, zero)`` pairs."""
    if quant_policy == 4:
        codes = torch.cat([codes & 0xF, codes >> 4], dim=-1)
    return codes.float() * scales_zeros[..., :1] + scales_zeros[..., 1:]
