"""One decoder for the Llama family (Llama, Mistral, Qwen2, InternLM2, ...) over the paged cache."""

from __future__ import annotations

import torch
from lmforge.errors import ModelLoadError
from lmforge.model.config import ModelConfig

from ..inputs import StepInputs
from ..kv_cache import LayerKVCache
from ..ops import Ops
from ..parallel.comm import SingleDevice
from ..rotary import RotaryEmbedding
from .weights import DecoderWeights, LayerWeights


class LlamaDecoder:
    """Pre-norm decoder: RMSNorm, GQA attention with rotary embeddings, SwiGLU MLP.

    A plain object over weight tensors rather than an ``nn.Module``: the forward is a function
    of the step's input tensors and the K/V pool only, which is what CUDA graph capture needs.
    With tensor parallelism ``config`` and ``weights`` are one rank's shard and ``comm`` sums
    the row-parallel outputs and gathers the logits (:mod:`..parallel.comm`).
    """

    def __init__(
        self, config: ModelConfig, weights: DecoderWeights, ops: Ops, device: torch.device,
        comm=None,
    ) -> None:
        if config.hidden_act != "silu":
            raise ModelLoadError(
                f"Activation {config.hidden_act!r} is not supported by the pytorch engine (silu only)."
            )
        self.config = config
        self.weights = weights
        self.ops = ops
        self.comm = comm or SingleDevice()
        self.rotary = RotaryEmbedding(config.rope, config.head_dim, device, ops)
        self.scale = config.head_dim**-0.5

    def forward(self, inputs: StepInputs, kv_caches: list[LayerKVCache]) -> torch.Tensor:
        """Float32 logits ``[len(inputs.logit_rows), vocab]``; writes the step's K/V to the pool."""
        ops, w, comm = self.ops, self.weights, self.comm
        hidden = comm.embed(inputs.input_ids, w.embed)
        cos, sin = self.rotary.cos_sin(inputs)
        eps = self.config.norm_eps
        residual = None
        # Linears dispatch on their weight's kind (dense, AWQ, W8A8); the SiLU-and-mul runs
        # inside the down projection where that measured faster (ops/triton_gemv.py).
        for layer, cache in zip(w.layers, kv_caches, strict=True):
            normed, residual = ops.rms_norm(hidden, layer.input_norm, eps, residual)
            if residual is None:  # first layer: the embedding is the residual stream
                residual = hidden
            hidden = comm.all_reduce(
                self._attention(ops.linear(normed, layer.qkv), layer, cache, inputs, cos, sin))
            normed, residual = ops.rms_norm(hidden, layer.post_attn_norm, eps, residual)
            hidden = comm.all_reduce(
                ops.silu_mul_linear(ops.linear(normed, layer.gate_up), layer.down))
        hidden = hidden[inputs.logit_rows]
        residual = residual[inputs.logit_rows]
        normed, _ = ops.rms_norm(hidden, w.norm, eps, residual)
        return comm.gather_vocab(ops.linear(normed, w.lm_head)).float()

    def _attention(
        self,
        qkv: torch.Tensor,
        layer: LayerWeights,
        cache: LayerKVCache,
        inputs: StepInputs,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        c, ops = self.config, self.ops
        tokens = qkv.shape[0]
        q, k, v = qkv.split([c.q_size, c.kv_size, c.kv_size], dim=-1)
        q = q.view(tokens, c.num_heads, c.head_dim)
        k = k.view(tokens, c.num_kv_heads, c.head_dim)
        v = v.view(tokens, c.num_kv_heads, c.head_dim)
        k_cache, v_cache, quant = cache.k, cache.v, cache.quant_args
        q = ops.rope_and_store_kv(q, k, v, cos, sin, k_cache, v_cache, inputs.slot_mapping,
                                  **quant)
        if inputs.is_decode:
            out = ops.paged_decode_attention(
                q, k_cache, v_cache, inputs.block_tables, inputs.kv_lens, self.scale,
                c.sliding_window, **quant,
            )
        else:
            out = torch.empty_like(q)
            d = inputs.num_decode_seqs
            if d:
                out[:d] = ops.paged_decode_attention(
                    q[:d], k_cache, v_cache, inputs.block_tables[:d], inputs.kv_lens[:d],
                    self.scale, c.sliding_window, **quant,
                )
            ops.paged_prefill_attention(
                q[d:], k_cache, v_cache, inputs.block_tables[d:],
                inputs.prefill_cu_q_lens if d else inputs.cu_q_lens, inputs.kv_lens[d:],
                self.scale, c.sliding_window, max_q_len=inputs.max_q_len, out=out[d:], **quant,
            )
        return ops.linear(out.reshape(tokens, c.q_size), layer.o)
