"""Mixtral: Mistral's attention over a mixture of experts."""

from __future__ import annotations

from typing import Any, ClassVar

from ..adapter import ModelAdapter
from ..config import ModelConfig, MoEConfig
from .mistral import MistralAdapter


class MixtralAdapter(MistralAdapter):
    """``MixtralForCausalLM``: ``block_sparse_moe.gate`` routes each token to its top-k experts
    ``block_sparse_moe.experts.{e}`` (``w1`` gate, ``w3`` up, ``w2`` down), whose softmax
    weights are always renormalized over the chosen ones."""

    layer_linears: ClassVar[dict[str, str]] = {
        **ModelAdapter.layer_linears, "block_sparse_moe.gate": "mlp.router"}
    experts_prefix: ClassVar[str] = "block_sparse_moe.experts"
    expert_linears: ClassVar[dict[str, str]] = {"w1": "gate", "w3": "up", "w2": "down"}

    def configure(self, config: ModelConfig, hf: dict[str, Any]) -> None:
        super().configure(config, hf)
        config.moe = MoEConfig(
            num_experts=int(hf.get("num_local_experts") or hf["num_experts"]),
            top_k=int(hf["num_experts_per_tok"]),
            intermediate_size=config.intermediate_size,
            renormalize=True,
        )
