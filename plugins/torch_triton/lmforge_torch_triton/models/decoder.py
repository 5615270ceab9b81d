"""One decoder for every built-in family over the paged cache.

The Llama layout is the base; what other families change is data in the canonical config
(:class:`lmforge.model.config.ModelConfig`): per-head query and key norms (Qwen3, Gemma 3),
norms after attention and the MLP, ``1 + w`` norms, scaled embeddings and soft-capped logits
(Gemma 2/3), sliding-window layers with their own rope (Gemma, Mistral, Phi-3), GeGLU, and
mixture-of-experts MLPs (Mixtral, Qwen3-MoE). A model plugin may run its own layer instead
(:mod:`.pieces`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lmforge.model.config import ModelConfig
from lmforge.model.linear import LinearWeight

from ..inputs import StepInputs
from ..kv_cache import LayerKVCache
from ..ops import Ops, QuantizedActivation
from ..parallel.comm import SingleDevice
from ..rotary import RotaryEmbedding
from .attention import Attention
from .pieces import DecoderPieces
from .weights import DecoderWeights, LayerWeights


@dataclass
class StepState:
    """What every layer of one step reads: the inputs, each layer's K/V cache and each layer's
    rotary cos/sin tables."""

    inputs: StepInputs
    kv_caches: list[LayerKVCache]
    rope: list[tuple[torch.Tensor, torch.Tensor]]


class Decoder:
    """Pre-norm decoder: RMSNorm, GQA attention with rotary embeddings, gated MLP or mixture of
    experts, with each family's variations taken from ``config``.

    A plain object over weight tensors rather than an ``nn.Module``: the forward is a function
    of the step's input tensors and the K/V pool only, which is what CUDA graph capture needs.
    With tensor parallelism ``config`` and ``weights`` are one rank's shard and ``comm`` sums
    the row-parallel outputs and gathers the logits (:mod:`..parallel.comm`).
    """

    def __init__(
        self, config: ModelConfig, weights: DecoderWeights, ops: Ops, device: torch.device,
        comm=None, pieces: DecoderPieces | None = None,
    ) -> None:
        self.config = config
        self.weights = weights
        self.ops = ops
        self.comm = comm or SingleDevice()
        self.attention = Attention(config, ops)
        self.forward_layer = pieces.forward_layer if pieces is not None else standard_layer
        global_rope = RotaryEmbedding(config.rope, config.head_dim, device, ops)
        local_rope = global_rope if config.local_rope is None else RotaryEmbedding(
            config.local_rope, config.head_dim, device, ops)
        self.rotaries = [local_rope if config.layer_window(i) is not None else global_rope
                         for i in range(config.num_layers)]
        self.distinct_rotaries = list({id(r): r for r in self.rotaries}.values())
        # HF multiplies by the scale rounded to the weights' dtype.
        self.embed_scale = float(torch.tensor(config.embed_scale, dtype=weights.embed.dtype))

    def norm(self, x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None,
             consumer: LinearWeight | None = None,
             ) -> tuple[torch.Tensor | QuantizedActivation, torch.Tensor | None]:
        """RMSNorm of ``x`` (of ``x + residual``, returned as the new residual, when given).
        ``consumer`` is the linear the output feeds, if only that one: for a W8A8 linear the
        output comes quantized for it, from the norm's own kernel (:meth:`.Ops.rms_norm_for`)."""
        return self.ops.rms_norm_for(x, weight, self.config.norm_eps, residual,
                                     self.config.norm_offset, consumer)

    def mlp(self, x: torch.Tensor | QuantizedActivation, layer: LayerWeights) -> torch.Tensor:
        """The layer's gated MLP or mixture of experts on normed ``x`` (quantized for
        ``gate_up`` when :func:`mlp_input` says so): this rank's part of the output (the caller
        sums it over tensor-parallel ranks)."""
        ops, act = self.ops, self.config.hidden_act
        if layer.moe is None:
            return ops.act_mul_linear(ops.linear(x, layer.gate_up), layer.down, act)
        moe = layer.moe
        weights, ids = ops.moe_route(ops.linear(x, moe.router), moe.top_k, moe.renormalize)
        return ops.fused_moe(x, moe.gate_up, moe.down, weights, ids, act)

    def forward(self, inputs: StepInputs, kv_caches: list[LayerKVCache]) -> torch.Tensor:
        """Float32 logits ``[len(inputs.logit_rows), vocab]``; writes the step's K/V to the pool."""
        hidden = self.embed(inputs.input_ids)
        step = StepState(inputs, kv_caches, self.rope_tables(inputs))
        residual = None
        for index, layer in enumerate(self.weights.layers):
            hidden, residual = self.forward_layer(self, index, layer, hidden, residual, step)
        return self.logits(hidden, residual, inputs)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The input tokens' embeddings (scaled, where the family scales them)."""
        hidden = self.comm.embed(input_ids, self.weights.embed)
        return hidden * self.embed_scale if self.embed_scale != 1.0 else hidden

    def rope_tables(self, inputs: StepInputs) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's rotary cos/sin rows for the step's tokens."""
        tables = {id(r): r.cos_sin(inputs) for r in self.distinct_rotaries}
        return [tables[id(r)] for r in self.rotaries]

    def logits(self, hidden: torch.Tensor, residual: torch.Tensor,
               inputs: StepInputs) -> torch.Tensor:
        """Float32 logits of the rows ``inputs.logit_rows`` of the stream ``hidden + residual``
        after the last layer."""
        c = self.config
        hidden = hidden[inputs.logit_rows]
        residual = residual[inputs.logit_rows]
        normed, _ = self.norm(hidden, self.weights.norm, residual)
        logits = self.comm.gather_vocab(self.ops.linear(normed, self.weights.lm_head)).float()
        if c.final_logit_softcap is not None:
            cap = c.final_logit_softcap
            logits = torch.tanh(logits / cap) * cap
        return logits


def standard_layer(d: Decoder, index: int, layer: LayerWeights, hidden: torch.Tensor,
                   residual: torch.Tensor | None,
                   step: StepState) -> tuple[torch.Tensor, torch.Tensor]:
    """The built-in layer: each residual sum is fused into the norm that follows it. Linears
    dispatch on their weight's kind (dense, AWQ, W8A8); the SiLU-and-mul runs inside the down
    projection where that measured faster (ops/triton_gemv.py). A norm whose output feeds a
    W8A8 linear writes it quantized (:meth:`Decoder.norm`). It runs as :func:`layer_head`,
    attention over the stored K/V, and :func:`layer_tail`, the stretches that prompt steps
    replay as CUDA graphs (:mod:`..piecewise_graph`)."""
    q, k_new, v, residual = layer_head(d, index, layer, hidden, residual, step)
    attn = d.attention.attend_stored(q, k_new, v, index, step)
    return layer_tail(d, layer, attn, residual)


def layer_head(d: Decoder, index: int, layer: LayerWeights, hidden: torch.Tensor,
               residual: torch.Tensor | None, step: StepState):
    """Layer ``index`` up to its attention: the input norm (adding ``hidden`` to the residual
    stream), the QKV projection, the rotary embedding and the cache write. Returns the rotated
    queries, the rotated keys as computed (prompt steps; else None), the values and the
    residual stream."""
    normed, residual = d.norm(hidden, layer.input_norm, residual, consumer=layer.qkv)
    if residual is None:  # first layer: the embedding is the residual stream
        residual = hidden
    q, k, v = d.attention.project(normed, layer)
    q, k_new, v = d.attention.rotate_store(q, k, v, index, layer, step)
    return q, k_new, v, residual


def layer_tail(d: Decoder, layer: LayerWeights, attn: torch.Tensor,
               residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer after its attention output ``attn``: the output projection, the MLP and the
    norms between; returns the stream after the layer in two parts, as the layer does."""
    hidden = d.comm.all_reduce(d.ops.linear(attn, layer.o))
    if layer.attn_output_norm is not None:
        hidden, _ = d.norm(hidden, layer.attn_output_norm)
    normed, residual = d.norm(hidden, layer.post_attn_norm, residual, mlp_input(layer))
    hidden = d.comm.all_reduce(d.mlp(normed, layer))
    if layer.mlp_output_norm is not None:
        hidden, _ = d.norm(hidden, layer.mlp_output_norm)
    return hidden, residual


def mlp_input(layer: LayerWeights) -> LinearWeight | None:
    """The one linear the MLP's input feeds (``gate_up``); None for a mixture of experts, whose
    router and experts both read it."""
    return layer.gate_up if layer.moe is None else None
