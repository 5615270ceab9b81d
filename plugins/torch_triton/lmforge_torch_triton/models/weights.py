"""The decoder's weights in the engine's layout, built from the canonical weight stream.

Each linear module's checkpoint tensors become a weight of its kind (dense, AWQ int4 or W8A8:
:mod:`lmforge.model.linear`); q, k and v fuse into one ``qkv`` and gate and up into one
``gate_up``, per kind, so a layer runs two matmuls where the checkpoint has five. Floating-point
tensors are cast to the activation dtype as they arrive, so the model is held once plus one
layer's fused copy. With tensor parallelism each rank reads only its slices (a
:class:`~lmforge_torch_triton.parallel.plan.ShardPlan`) and fuses those. A mixture-of-experts
layer stacks its experts instead (:mod:`.experts`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from lmforge.errors import ModelLoadError
from lmforge.model.config import ModelConfig
from lmforge.model.linear import DenseLinear, LinearWeight, linear_from_parts
from lmforge.model.loader import ModelInfo

from ..parallel.plan import ShardPlan
from .experts import MoEWeights, stack_experts
from .pieces import DecoderPieces

# Per-layer tensors that are not linears, by canonical name -> LayerWeights field.
_NORMS = {"input_norm": "input_norm", "post_attn_norm": "post_attn_norm",
          "attn.q_norm": "q_norm", "attn.k_norm": "k_norm",
          "attn_output_norm": "attn_output_norm", "mlp_output_norm": "mlp_output_norm"}
_ATTENTION = ("attn.q", "attn.k", "attn.v", "attn.o")
_MLP = ("mlp.gate", "mlp.up", "mlp.down")


@dataclass
class LayerWeights:
    """One layer in the engine's layout. The MLP is dense (``gate_up``, ``down``) or a mixture
    of experts (``moe``); norms a family lacks are None; ``extra`` holds a model plugin's own
    tensors (:class:`~lmforge_torch_triton.models.pieces.DecoderPieces`)."""

    qkv: LinearWeight  # out: q_size + 2 * kv_size
    o: LinearWeight  # out: H
    input_norm: torch.Tensor | None = None  # [H]
    post_attn_norm: torch.Tensor | None = None  # [H], before the MLP
    gate_up: LinearWeight | None = None  # out: 2 * I
    down: LinearWeight | None = None  # out: H
    moe: MoEWeights | None = None
    q_norm: torch.Tensor | None = None  # [head_dim]
    k_norm: torch.Tensor | None = None  # [head_dim]
    attn_output_norm: torch.Tensor | None = None  # [H]
    mlp_output_norm: torch.Tensor | None = None  # [H]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class DecoderWeights:
    embed: torch.Tensor  # [V, H]
    norm: torch.Tensor  # [H]
    lm_head: DenseLinear  # [V, H]; the embedding itself when tied
    layers: list[LayerWeights]


def _fuse(name: str, parts: list[LinearWeight]) -> LinearWeight:
    kinds = {p.kind for p in parts}
    if len(kinds) != 1:
        raise ModelLoadError(
            f"{name} fuses layers stored as {' and '.join(sorted(kinds))}; quantize all of them "
            "or none."
        )
    return type(parts[0]).fuse(parts)


def _required_norms(config: ModelConfig) -> tuple[str, ...]:
    """The norms the built-in layer reads for ``config``."""
    names = ("input_norm", "post_attn_norm")
    if config.qk_norm:
        names += ("attn.q_norm", "attn.k_norm")
    if config.sandwich_norms:
        names += ("attn_output_norm", "mlp_output_norm")
    return names


def _linears(i: int, tensors: dict[str, torch.Tensor], modules: tuple[str, ...],
             config: ModelConfig, group_size: int | None,
             plan: ShardPlan) -> dict[str, LinearWeight]:
    biased = {"attn.q": config.qkv_bias, "attn.k": config.qkv_bias, "attn.v": config.qkv_bias,
              "attn.o": config.o_bias, "mlp.gate": config.mlp_bias, "mlp.up": config.mlp_bias,
              "mlp.down": config.mlp_bias}
    linears = {}
    for module in modules:
        prefix = f"{module}."
        parts = {k[len(prefix):]: tensors.pop(k) for k in list(tensors) if k.startswith(prefix)}
        if biased[module] and "bias" not in parts:
            raise ModelLoadError(f"The checkpoint lacks layers.{i}.{module}.bias.")
        linear = linear_from_parts(f"layers.{i}.{module}", parts, group_size)
        linears[module] = linear if plan.keeps_bias(module) else replace(linear, bias=None)
    return linears


def _layer(i: int, tensors: dict[str, torch.Tensor], config: ModelConfig, group_size: int | None,
           device: torch.device, dtype: torch.dtype, plan: ShardPlan,
           pieces: DecoderPieces | None) -> LayerWeights:
    required = pieces.layer_weights if pieces is not None else _required_norms(config)
    missing = [name for name in required if name not in tensors]
    if missing:
        raise ModelLoadError(f"The checkpoint lacks layers.{i}.{missing[0]}.")
    extra = {name: tensors.pop(name) for name in pieces.layer_weights} if pieces else {}
    norms = {field_name: tensors.pop(name) for name, field_name in _NORMS.items()
             if name in tensors}
    linears = _linears(i, tensors, _ATTENTION, config, group_size, plan)
    moe = None
    if config.is_moe_layer(i):
        moe = stack_experts(f"layers.{i}", tensors, config.moe, device, dtype)
    else:
        linears.update(_linears(i, tensors, _MLP, config, group_size, plan))
    if tensors:
        raise ModelLoadError(f"Weight 'layers.{i}.{sorted(tensors)[0]}' does not fit the "
                             "model's configuration.")
    qkv = _fuse(f"layers.{i}.attn.qkv", [linears[m] for m in ("attn.q", "attn.k", "attn.v")])
    mlp = {}
    if moe is None:
        gate_up = _fuse(f"layers.{i}.mlp.gate_up", [linears["mlp.gate"], linears["mlp.up"]])
        mlp = dict(gate_up=_placed(gate_up, device, dtype),
                   down=_placed(linears["mlp.down"], device, dtype))
    return LayerWeights(qkv=_placed(qkv, device, dtype),
                        o=_placed(linears["attn.o"], device, dtype), moe=moe, extra=extra,
                        **mlp, **norms)


def _placed(linear: LinearWeight, device: torch.device, dtype: torch.dtype) -> LinearWeight:
    """``linear`` on ``device`` in ``dtype``; an AWQ weight on a GPU also in the W4A16 GEMV's
    layout where that kernel's launch table runs it (repacked once, here)."""
    linear = linear.to(device, dtype)
    if linear.kind != "awq" or torch.device(device).type != "cuda":
        return linear
    from ..ops import triton_awq_gemv  # needs Triton, which a CUDA device has

    return triton_awq_gemv.with_gemv_layout(linear)


def _keeps_dtype(name: str, tensor: torch.Tensor) -> bool:
    """Quantized codes and W8A8's float32 scales keep their dtype; the rest is cast."""
    return not tensor.is_floating_point() or tensor.element_size() == 1 or name.endswith(
        ".weight_scale")


def awq_group_size(model_info: ModelInfo) -> int | None:
    quant = model_info.quant
    return quant.group_size if quant is not None and quant.method == "awq" else None


def _pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """The last rank's vocabulary rows, padded with zeros to every rank's count."""
    if tensor.shape[0] == rows:
        return tensor
    return torch.cat([tensor, tensor.new_zeros(rows - tensor.shape[0], *tensor.shape[1:])])


def load_decoder_weights(
    model_info: ModelInfo, dtype: torch.dtype, device: torch.device,
    plan: ShardPlan | None = None, pieces: DecoderPieces | None = None,
) -> DecoderWeights:
    """Stream ``model_info``'s canonical weights onto ``device`` in ``dtype`` and fuse them;
    with ``plan``, only the slices of one tensor-parallel rank; with a model plugin's
    ``pieces``, the layer tensors those name too."""
    config = model_info.config
    group_size = awq_group_size(model_info)
    plan = plan or ShardPlan(config, awq_group_size=group_size)
    per_layer: list[dict[str, torch.Tensor]] = [{} for _ in range(config.num_layers)]
    top: dict[str, torch.Tensor] = {}
    select = plan.select if plan.size > 1 else None
    for name, tensor in model_info.iter_weights(device=device, select=select):
        keep = _keeps_dtype(name, tensor)
        tensor = tensor.to(device=device) if keep else tensor.to(device=device, dtype=dtype)
        if not name.startswith("layers."):
            top[name] = tensor
            continue
        _, index, part = name.split(".", 2)
        if int(index) >= config.num_layers:
            raise ModelLoadError(f"Weight {name!r} does not fit the model's configuration.")
        per_layer[int(index)][part] = tensor
    missing = [n for n in ("embed", "norm") if n not in top]
    if "lm_head" not in top and not config.tie_word_embeddings:
        missing.append("lm_head")
    missing += [f"layers.{i}" for i, tensors in enumerate(per_layer) if not tensors]
    if missing:
        raise ModelLoadError(
            f"The checkpoint at {model_info.path} lacks {len(missing)} weights, e.g. {missing[0]!r}."
        )
    layers = []
    for i in range(config.num_layers):
        layers.append(_layer(i, per_layer[i], config, group_size, device, dtype, plan, pieces))
        per_layer[i] = {}
    if plan.size > 1:
        for name in ("embed", "lm_head"):
            if name in top:
                top[name] = _pad_rows(top[name], plan.vocab_rows)
    return DecoderWeights(
        embed=top["embed"],
        norm=top["norm"],
        lm_head=DenseLinear(top.get("lm_head", top["embed"])),
        layers=layers,
    )
