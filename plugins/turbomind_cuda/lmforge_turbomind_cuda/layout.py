"""The engine's weight layout: tensors fused, sharded and named exactly as the kernels read them.

Per layer ``i``: ``layers.i.input_norm``, ``layers.i.qkv`` (rows: this rank's query heads, then
its key heads, then its value heads; ``[(heads + 2 * kv_heads) * head_dim / tp, hidden]``),
``layers.i.qkv_bias`` (when the model has one), ``layers.i.o`` (``[hidden, heads * head_dim /
tp]``: the columns of this rank's heads), ``layers.i.post_norm``, ``layers.i.gate_up`` (rows:
this rank's slice of gate, then the same slice of up) and ``layers.i.down`` (``[hidden, inter /
tp]``). Top level: ``embed`` (whole on every rank), ``norm``, and ``lm_head`` (a slice of the
vocabulary per rank; absent when tied to the embedding and tp is 1).

:func:`iter_layout` turns the canonical weight stream of any checkpoint (HF, GGUF, dummy) into
this layout one layer at a time, for every rank at once; ``lmforge convert`` writes its output
and the runner loads it, so both always agree.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from lmforge.errors import ModelLoadError
from lmforge.model.config import ModelConfig
from lmforge.model.loader import ModelInfo

LAYER_NAMES = ("input_norm", "qkv", "qkv_bias", "o", "post_norm", "gate_up", "down")


def layer_parts(config: ModelConfig) -> set[str]:
    """The canonical names of one layer's tensors that the layout needs."""
    parts = {"input_norm", "post_attn_norm", "attn.o.weight"}
    parts |= {f"attn.{p}.weight" for p in "qkv"}
    parts |= {f"mlp.{p}.weight" for p in ("gate", "up", "down")}
    if config.qkv_bias:
        parts |= {f"attn.{p}.bias" for p in "qkv"}
    return parts


def check_tp(config: ModelConfig, tp: int) -> None:
    """Refuse a tensor-parallel size the model's heads or MLP cannot be split over."""
    if tp < 1 or tp & (tp - 1):
        raise ModelLoadError(f"Invalid value for tp: {tp}; use a power of two.")
    for what, count in (("attention heads", config.num_heads),
                        ("key/value heads", config.num_kv_heads),
                        ("MLP rows", config.intermediate_size)):
        if count % tp:
            raise ModelLoadError(f"Invalid value for tp: the model's {count} {what} do not "
                                 f"split over {tp} GPUs.")


def _rows(t: torch.Tensor, tp: int, rank: int) -> torch.Tensor:
    return t.chunk(tp, dim=0)[rank]


def _cols(t: torch.Tensor, tp: int, rank: int) -> torch.Tensor:
    return t.chunk(tp, dim=1)[rank]


def fuse_layer(parts: dict[str, torch.Tensor], config: ModelConfig, tp: int
               ) -> list[dict[str, torch.Tensor]]:
    """One layer's canonical tensors in the engine's layout, one dict per rank."""
    ranks = []
    for r in range(tp):
        fused = {
            "input_norm": parts["input_norm"],
            "qkv": torch.cat([_rows(parts[f"attn.{p}.weight"], tp, r) for p in "qkv"]),
            "o": _cols(parts["attn.o.weight"], tp, r),
            "post_norm": parts["post_attn_norm"],
            "gate_up": torch.cat([_rows(parts["mlp.gate.weight"], tp, r),
                                  _rows(parts["mlp.up.weight"], tp, r)]),
            "down": _cols(parts["mlp.down.weight"], tp, r),
        }
        if config.qkv_bias:
            fused["qkv_bias"] = torch.cat([_rows(parts[f"attn.{p}.bias"], tp, r) for p in "qkv"])
        ranks.append({k: v.contiguous() for k, v in fused.items()})
    return ranks


def iter_layout(model_info: ModelInfo, dtype: torch.dtype, tp: int = 1,
                device: str | torch.device = "cpu"
                ) -> Iterator[tuple[str, list[torch.Tensor]]]:
    """``(name, [tensor of rank 0, rank 1, ...])`` in the engine's layout, layer by layer as each
    layer's last canonical tensor arrives (at most one layer is held twice)."""
    config = model_info.config
    check_tp(config, tp)
    needed = layer_parts(config)
    pending: dict[int, dict[str, torch.Tensor]] = {}
    done: set[int] = set()
    top: dict[str, torch.Tensor] = {}
    for name, tensor in model_info.iter_weights(device=device):
        tensor = tensor.to(device=device, dtype=dtype)
        if not name.startswith("layers."):
            top[name] = tensor
            continue
        _, index, part = name.split(".", 2)
        i = int(index)
        if i >= config.num_layers or part not in needed:
            raise ModelLoadError(f"Weight {name!r} does not fit the model's configuration.")
        parts = pending.setdefault(i, {})
        parts[part] = tensor
        if len(parts) == len(needed):
            for key, shards in _transpose(fuse_layer(pending.pop(i), config, tp)):
                yield f"layers.{i}.{key}", shards
            done.add(i)
    missing = sorted(f"layers.{i}.{p}" for i, parts in pending.items() for p in needed - set(parts))
    missing += [f"layers.{i}" for i in range(config.num_layers) if i not in done and i not in pending]
    missing += [n for n in ("embed", "norm") if n not in top]
    if "lm_head" not in top and not config.tie_word_embeddings:
        missing.append("lm_head")
    if missing:
        raise ModelLoadError(
            f"The checkpoint at {model_info.path} lacks {len(missing)} weights, e.g. {missing[0]!r}."
        )
    yield "embed", [top["embed"]] * tp
    yield "norm", [top["norm"]] * tp
    if "lm_head" in top or tp > 1:
        head = top.get("lm_head", top["embed"])
        yield "lm_head", [_rows(head, tp, r).contiguous() for r in range(tp)]


def _transpose(ranks: list[dict[str, torch.Tensor]]) -> Iterator[tuple[str, list[torch.Tensor]]]:
    for key in ranks[0]:
        yield key, [rank[key] for rank in ranks]
