"""The decoder's attention block over the paged K/V cache: projections, per-head query and key
norms, rotary embedding, the cache write and paged attention with each layer's window."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from lmforge.model.config import ModelConfig

from ..ops import Ops, QuantizedActivation
from .weights import LayerWeights

if TYPE_CHECKING:
    from .decoder import StepState


class Attention:
    """GQA attention of every layer; what differs between layers (window, rope) comes from the
    config per layer index, so one object serves them all."""

    def __init__(self, config: ModelConfig, ops: Ops) -> None:
        self.config = config
        self.ops = ops
        self.windows = [config.layer_window(i) for i in range(config.num_layers)]

    def project(self, x: torch.Tensor | QuantizedActivation,
                layer: LayerWeights) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values ``[T, q_size]``, ``[T, kv_size]``, ``[T, kv_size]``: views
        of one fused projection (of ``x`` as the norm gave it, quantized for a W8A8 ``qkv``)."""
        c = self.config
        return self.ops.linear(x, layer.qkv).split([c.q_size, c.kv_size, c.kv_size], dim=-1)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: int,
               layer: LayerWeights, step: StepState) -> torch.Tensor:
        """Layer ``index``'s attention output before its output projection, ``[T, q_size]``:
        :meth:`rotate_store`, then :meth:`attend_stored`."""
        q, k_new, v = self.rotate_store(q, k, v, index, layer, step)
        return self.attend_stored(q, k_new, v, index, step)

    def rotate_store(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: int,
                     layer: LayerWeights, step: StepState,
                     ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Rotates ``q`` and ``k`` (after their per-head norms, where the layer has them) and
        stores ``k`` and ``v`` in the layer's cache. Returns the rotated queries ``[T, nh, d]``,
        for a step with prompts the rotated keys as computed ``[T, nkv, d]`` (else None), and
        ``v`` as ``[T, nkv, d]``."""
        c, ops, inputs = self.config, self.ops, step.inputs
        tokens = q.shape[0]
        q = q.view(tokens, c.num_heads, c.head_dim)
        k = k.view(tokens, c.num_kv_heads, c.head_dim)
        v = v.view(tokens, c.num_kv_heads, c.head_dim)
        cache = step.kv_caches[index]
        cos, sin = step.rope[index]
        norms = {}
        if layer.q_norm is not None:
            norms = dict(q_norm=layer.q_norm, k_norm=layer.k_norm, norm_eps=c.norm_eps,
                         norm_offset=c.norm_offset)
        k_new = None if inputs.is_decode else torch.empty_like(k)
        q = ops.rope_and_store_kv(q, k, v, cos, sin, cache.k, cache.v, inputs.slot_mapping,
                                  **cache.quant_args, **norms, k_out=k_new)
        return q, k_new, v

    def attend_stored(self, q: torch.Tensor, k_new: torch.Tensor | None, v: torch.Tensor,
                      index: int, step: StepState) -> torch.Tensor:
        """Attention of the rotated queries ``q`` within the layer's window, ``[T, q_size]``.
        Decodes read every position from the cache. Prompts read only their cached prefix from
        it and attend to this step's own tokens as computed (``k_new``, ``v``), unquantized
        whatever ``quant_policy`` is (SGLang's "extend" attention): a prompt with no cached
        prefix never reads the cache, and a chunk sees earlier chunks as the cache holds them."""
        c, ops, inputs = self.config, self.ops, step.inputs
        tokens = q.shape[0]
        cache = step.kv_caches[index]
        k_cache, v_cache, quant = cache.k, cache.v, cache.quant_args
        window, scale = self.windows[index], c.softmax_scale
        if c.attn_logit_softcap is not None:  # only where set, so other calls stay as they were
            quant = {**quant, "softcap": c.attn_logit_softcap}
        if inputs.is_decode:
            out = ops.paged_decode_attention(q, k_cache, v_cache, inputs.block_tables,
                                             inputs.kv_lens, scale, window, **quant)
        else:
            out = torch.empty_like(q)
            d = inputs.num_decode_seqs
            if d:
                out[:d] = ops.paged_decode_attention(
                    q[:d], k_cache, v_cache, inputs.block_tables[:d], inputs.kv_lens[:d],
                    scale, window, **quant,
                )
            ops.paged_prefill_attention(
                q[d:], k_cache, v_cache, inputs.block_tables[d:],
                inputs.prefill_cu_q_lens if d else inputs.cu_q_lens, inputs.kv_lens[d:],
                scale, window, max_q_len=inputs.max_q_len, out=out[d:], **quant,
                k_new=k_new[d:], v_new=v[d:],
            )
        return out.reshape(tokens, c.q_size)

    def forward(self, x: torch.Tensor | QuantizedActivation, index: int, layer: LayerWeights,
                step: StepState) -> torch.Tensor:
        """The whole block on normed input ``x``: this rank's part of the output projection
        (the caller sums it over tensor-parallel ranks)."""
        q, k, v = self.project(x, layer)
        return self.ops.linear(self.attend(q, k, v, index, layer, step), layer.o)
