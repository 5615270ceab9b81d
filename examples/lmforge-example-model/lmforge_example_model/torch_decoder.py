"""OLMo 2's layer for lmforge's pytorch engine, built from the engine decoder's blocks.

The engine calls ``forward_layer`` for every layer in place of its own (see the pytorch
engine's ``DecoderPieces``). The residual stream arrives as ``hidden + residual``; the layer
returns it in the same two parts. Its own tensors are in ``layer.extra`` by their canonical
names (``adapter.py``).
"""

from __future__ import annotations

from lmforge_torch_triton.models.pieces import DecoderPieces

from .adapter import LAYER_NORMS


def forward_layer(decoder, index, layer, hidden, residual, step):
    """attention -> norm -> add, then MLP -> norm -> add; the queries and keys are normalized
    over all their heads before the rotary embedding."""
    norms = layer.extra
    stream = hidden if residual is None else hidden + residual
    q, k, v = decoder.attention.project(stream, layer)
    q, _ = decoder.norm(q.contiguous(), norms["attn.q_proj_norm"])
    k, _ = decoder.norm(k.contiguous(), norms["attn.k_proj_norm"])
    attended = decoder.attention.attend(q, k, v, index, layer, step)
    out, _ = decoder.norm(decoder.ops.linear(attended, layer.o), norms["attn_output_norm"])
    stream = stream + out
    out, _ = decoder.norm(decoder.mlp(stream, layer), norms["mlp_output_norm"])
    return out, stream


# The q/k norms span every head, so a tensor-parallel rank (a slice of the heads) could not
# compute them alone: the layer declares it runs whole.
PIECES = DecoderPieces(forward_layer=forward_layer, layer_weights=tuple(LAYER_NORMS),
                       tensor_parallel=False)
