"""GGUF specifics: undoing llama.cpp's Q/K row permutation."""

from __future__ import annotations

import torch
from lmforge.model.gguf import _unpermute


def _llama_cpp_permute(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    # What llama.cpp's converter does to HF q/k rows (interleave each head's rotary halves).
    half = weight.shape[0] // num_heads // 2
    return (
        weight.reshape(num_heads, 2, half, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)
    )


def test_unpermute_inverts_llama_cpp_permutation():
    weight = torch.arange(3 * 8 * 5, dtype=torch.float32).reshape(24, 5)
    permuted = _llama_cpp_permute(weight, 3)
    assert not torch.equal(permuted, weight)
    torch.testing.assert_close(_unpermute(permuted, 3), weight, rtol=0, atol=0)
