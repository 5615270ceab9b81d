"""The op table's quantized linears on CUDA: each weight kind (:mod:`lmforge.model.linear`) to
its Triton kernel. W4A16 runs the AutoAWQ-layout matmul; W8A8 quantizes its input per token
inside the matmul at decode sizes and in its own kernel before the 8-bit matmul above them."""

from __future__ import annotations

import torch

from . import triton_awq, triton_w8a8


def linear_awq(x: torch.Tensor, w) -> torch.Tensor:
    return triton_awq.awq_linear(x, w.qweight, w.qzeros, w.scales, w.group_size, w.bias)


def silu_mul_linear_awq(gate_up: torch.Tensor, w) -> torch.Tensor:
    return triton_awq.awq_silu_mul_linear(gate_up, w.qweight, w.qzeros, w.scales, w.group_size,
                                          w.bias)


def linear_w8a8(x: torch.Tensor, w) -> torch.Tensor:
    return triton_w8a8.w8a8_quant_linear(x, w.weight, w.weight_scale, w.bias)


def silu_mul_linear_w8a8(gate_up: torch.Tensor, w) -> torch.Tensor:
    return triton_w8a8.w8a8_silu_mul_linear(gate_up, w.weight, w.weight_scale, w.bias)
