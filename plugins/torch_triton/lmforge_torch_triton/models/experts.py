"""A mixture-of-experts layer's weights, stacked per layer as the fused MoE kernel reads them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lmforge.errors import ModelLoadError
from lmforge.model.config import MoEConfig
from lmforge.model.linear import DenseLinear, linear_from_parts

_EXPERT_LINEARS = ("gate", "up", "down")


@dataclass
class MoEWeights:
    """``router`` gives each token's expert logits; experts are stacked: ``gate_up: [E, 2*I, H]``
    (each expert's gate rows, then its up rows) and ``down: [E, H, I]``. With tensor
    parallelism ``I`` is this rank's slice of every expert."""

    router: DenseLinear  # [E, H]
    gate_up: torch.Tensor
    down: torch.Tensor
    top_k: int
    renormalize: bool


def _expert_weight(prefix: str, name: str, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Pop expert linear ``name``'s weight; anything but one floating-point weight is refused."""
    parts = {key.rpartition(".")[2]: tensors.pop(key)
             for key in list(tensors) if key.startswith(f"{name}.")}
    if not parts:
        raise ModelLoadError(f"The checkpoint lacks {prefix}.{name}.weight.")
    if set(parts) != {"weight"}:
        kinds = ", ".join(sorted(parts))
        raise ModelLoadError(
            f"Expert weight {name} holds {kinds}; the pytorch engine runs experts stored as "
            "plain floating-point weights without biases."
        )
    weight = parts["weight"]
    if not weight.is_floating_point() or weight.element_size() == 1:
        raise ModelLoadError(f"Expert weight {name} is quantized ({weight.dtype}); the pytorch "
                             "engine runs experts in 16- or 32-bit floating point only.")
    return weight


def stack_experts(prefix: str, tensors: dict[str, torch.Tensor], moe: MoEConfig,
                  device: torch.device, dtype: torch.dtype) -> MoEWeights:
    """Pop layer ``prefix``'s router and experts (``mlp.router.*``, ``mlp.experts.{e}.*``) out
    of ``tensors`` and stack the experts, one at a time, into the layer's two tensors."""
    router_parts = {key.rpartition(".")[2]: tensors.pop(key)
                    for key in list(tensors) if key.startswith("mlp.router.")}
    router = linear_from_parts(f"{prefix}.mlp.router", router_parts)
    if not isinstance(router, DenseLinear) or router.bias is not None:
        raise ModelLoadError(f"The router {prefix}.mlp.router must be a plain weight.")
    gate_up = down = None
    for e in range(moe.num_experts):
        gate, up, down_e = (_expert_weight(prefix, f"mlp.experts.{e}.{m}", tensors)
                            for m in _EXPERT_LINEARS)
        inter, hidden = gate.shape
        if gate_up is None:
            gate_up = torch.empty(moe.num_experts, 2 * inter, hidden, device=device, dtype=dtype)
            down = torch.empty(moe.num_experts, hidden, inter, device=device, dtype=dtype)
        if (up.shape != gate.shape or tuple(down_e.shape) != (hidden, inter)
                or gate_up.shape[1:] != (2 * inter, hidden)):
            raise ModelLoadError(f"The experts of {prefix} do not all have the same shapes.")
        gate_up[e, :inter].copy_(gate)
        gate_up[e, inter:].copy_(up)
        down[e].copy_(down_e)
    return MoEWeights(router.to(device, dtype), gate_up, down, moe.top_k, moe.renormalize)
