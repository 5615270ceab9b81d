"""What a model plugin brings the ``pytorch`` engine for an architecture the built-in decoder
does not cover: the contract behind ``ModelSpec(decoders={"pytorch": ...})``.

An architecture whose differences are all fields of :class:`lmforge.model.config.ModelConfig`
needs no code here: its adapter fills the fields and ``ModelSpec(engines=("pytorch",))`` says
the engine runs it. One whose layers are built differently names a :class:`DecoderPieces`
object (a lazy ``"package.module:NAME"``) for the engine, which then calls its
``forward_layer`` for every layer in place of the built-in one. The decoder's blocks stay
available to it (:class:`~lmforge_torch_triton.models.decoder.Decoder`: ``norm``,
``attention.project``, ``attention.attend``, ``mlp``), so a plugin writes only what differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lmforge import registry
from lmforge.errors import ModelLoadError


@dataclass(frozen=True)
class DecoderPieces:
    """How the pytorch engine runs one architecture's layers.

    ``forward_layer(decoder, index, layer, hidden, residual, step) -> (hidden, residual)`` runs
    layer ``index``: the residual stream is ``hidden + residual`` (``residual`` is None before
    the first layer), and the layer returns the stream after it in the same two parts, which
    lets the built-in layer fuse each residual sum into the next norm. ``layer`` is its
    :class:`~lmforge_torch_triton.models.weights.LayerWeights`; ``step`` the step's
    :class:`~lmforge_torch_triton.models.decoder.StepState`.

    ``layer_weights`` names the per-layer tensors the layer reads beyond the canonical linears
    (``attn.{q,k,v,o}``, ``mlp.{gate,up,down}``), canonical names after ``layers.{i}.``: each
    must be in the checkpoint and arrives in ``layer.extra``, whole on every tensor-parallel
    rank. ``tensor_parallel`` says whether ``forward_layer`` is right on a shard of the model
    (heads and MLP split over ranks); the engine refuses ``tp > 1`` otherwise.
    """

    forward_layer: Callable
    layer_weights: tuple[str, ...] = ()
    tensor_parallel: bool = False


def pieces_for(architecture: str) -> DecoderPieces | None:
    """The pieces a model plugin registered for ``architecture`` and this engine, if any."""
    spec = registry.models().get(architecture)
    ref = spec.decoders.get("pytorch") if spec is not None else None
    if ref is None:
        return None
    pieces = registry.load_object(ref)
    if not isinstance(pieces, DecoderPieces):
        raise ModelLoadError(
            f"The {spec.plugin or 'model'} plugin's pytorch decoder for {architecture} is a "
            f"{type(pieces).__name__}, not a DecoderPieces; see docs/plugins.md."
        )
    return pieces
