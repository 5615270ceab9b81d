"""Qwen3-MoE: Qwen3's attention over a mixture of many small experts."""

from __future__ import annotations

from typing import Any, ClassVar

from ..adapter import ModelAdapter
from ..config import ModelConfig, MoEConfig
from .qwen3 import Qwen3Adapter


class Qwen3MoeAdapter(Qwen3Adapter):
    """``Qwen3MoeForCausalLM``: ``mlp.gate`` is the router and ``mlp.experts.{e}`` the experts;
    the softmax weights of the chosen experts are renormalized only with ``norm_topk_prob``.
    Layers in ``mlp_only_layers``, or off the ``decoder_sparse_step`` stride, keep a dense MLP."""

    layer_linears: ClassVar[dict[str, str]] = {
        **ModelAdapter.layer_linears, "mlp.gate": "mlp.router"}
    experts_prefix: ClassVar[str] = "mlp.experts"
    expert_linears: ClassVar[dict[str, str]] = {
        "gate_proj": "gate", "up_proj": "up", "down_proj": "down"}

    def configure(self, config: ModelConfig, hf: dict[str, Any]) -> None:
        super().configure(config, hf)
        experts = int(hf.get("num_experts") or hf.get("num_local_experts") or 0)
        if experts:
            step = int(hf.get("decoder_sparse_step") or 1)
            only_mlp = {int(i) for i in hf.get("mlp_only_layers") or ()}
            dense = tuple(i for i in range(config.num_layers)
                          if i in only_mlp or (i + 1) % step)
            config.moe = MoEConfig(
                num_experts=experts,
                top_k=int(hf["num_experts_per_tok"]),
                intermediate_size=int(hf["moe_intermediate_size"]),
                renormalize=bool(hf.get("norm_topk_prob", False)),
                dense_layers=dense,
            )
