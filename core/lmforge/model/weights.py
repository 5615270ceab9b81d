"""Streaming checkpoint readers: one tensor at a time, one shard open at a time."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from ..errors import ModelLoadError
from .config import ModelConfig
from .linear import FP8_DTYPE
from .quant import QuantConfig

SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
# A folder converted into one engine's own layout (``lmforge convert``) says so in this file:
# ``{"format": <the layout's name>, "files": [<weight files, relative>], ...}``. Only engines that
# list that format in their capabilities' ``weight_formats`` read it.
CONVERTED_MARKER = "lmforge_converted.json"


def _converted_checkpoint(marker: Path) -> tuple[str, list[Path]]:
    try:
        info = json.loads(marker.read_text())
        fmt, files = str(info["format"]), [marker.parent / f for f in info["files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"Cannot read {marker}: {exc}.") from None
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise ModelLoadError(f"Weight file {missing[0]} listed in {marker} is missing.")
    return fmt, files

# The part of a canonical tensor that a reader keeps: (axis, start, stop), or None for all of it.
# A selection takes the tensor's canonical name and full shape (tensor parallelism: one rank's
# slice).
TensorPart = tuple[int, int, int] | None
Select = Callable[[str, tuple[int, ...]], TensorPart]
# Canonical (name, tensor) pairs of one checkpoint tensor (an adapter's ``map_weights``).
MapWeights = Callable[[str, torch.Tensor], Iterable[tuple[str, torch.Tensor]]]

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool, "F8_E4M3": FP8_DTYPE,
}


def find_checkpoint(folder: Path) -> tuple[str, list[Path]]:
    """The format and the weight files of a model folder: ``safetensors`` or ``bin`` for an HF
    folder, or the layout named in a converted folder's :data:`CONVERTED_MARKER`."""
    marker = folder / CONVERTED_MARKER
    if marker.is_file():
        return _converted_checkpoint(marker)
    for fmt, index_name, pattern in (
        ("safetensors", SAFETENSORS_INDEX, "*.safetensors"),
        ("bin", BIN_INDEX, "pytorch_model*.bin"),
    ):
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise ModelLoadError(f"Cannot read the weight index {index}: {exc}.") from None
            shards = [folder / name for name in sorted(set(weight_map.values()))]
            missing = [s.name for s in shards if not s.is_file()]
            if missing:
                raise ModelLoadError(f"Weight shard {missing[0]} listed in {index} is missing.")
            return fmt, shards
        shards = sorted(folder.glob(pattern))
        if shards:
            return fmt, shards
    raise ModelLoadError(
        f"No weights found in {folder}: expected *.safetensors or pytorch_model*.bin files."
    )


def _open_safetensors(shard: Path):
    from safetensors import safe_open

    try:
        return safe_open(str(shard), framework="pt")
    except Exception as exc:  # a truncated or corrupt file
        raise ModelLoadError(f"Cannot read the weight file {shard}: {exc}.") from None


def iter_safetensors(shards: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors of safetensors shards, read lazily (memory-mapped) one at a time."""
    for shard in shards:
        with _open_safetensors(shard) as f:
            for name in f.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                yield name, f.get_tensor(name)


def take(tensor: torch.Tensor, part: TensorPart) -> torch.Tensor:
    """``part`` of ``tensor`` as a tensor of its own, so the rest can be freed (or, memory-mapped,
    is never read)."""
    if part is None:
        return tensor
    axis, start, stop = part
    return tensor.narrow(axis, start, stop - start).clone()


def _index(part: TensorPart) -> tuple[slice, ...]:
    if part is None:
        return (slice(None),)
    axis, start, stop = part
    return (slice(None),) * axis + (slice(start, stop),)


def iter_safetensor_parts(shards: list[Path], map_weights: MapWeights,
                          select: Select) -> Iterator[tuple[str, torch.Tensor]]:
    """Canonical tensors of safetensors shards, each cut to ``select(name, shape)`` as it is
    read: a tensor the adapter only renames is read as that slice alone; one it rearranges
    (a fused qkv) is read whole, mapped, then cut."""
    for shard in shards:
        with _open_safetensors(shard) as f:
            for name in f.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                lazy = f.get_slice(name)
                dtype = _SAFETENSORS_DTYPES.get(lazy.get_dtype())
                shape = tuple(lazy.get_shape())
                if dtype is not None:
                    placeholder = torch.empty(shape, dtype=dtype, device="meta")
                    mapped = list(map_weights(name, placeholder))
                    if all(tensor is placeholder for _, tensor in mapped):
                        for canonical, _ in mapped:
                            yield canonical, lazy[_index(select(canonical, shape))].contiguous()
                        continue
                for canonical, tensor in map_weights(name, f.get_tensor(name)):
                    yield canonical, take(tensor, select(canonical, tuple(tensor.shape)))


def iter_bin(shards: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors of ``pytorch_model*.bin`` shards; memory-mapped so a shard is never copied whole."""
    for shard in shards:
        try:
            state = torch.load(shard, map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:
            raise ModelLoadError(f"Cannot read the weight file {shard}: {exc}.") from None
        for name in list(state):
            yield name, state.pop(name)
        del state


def _linear_shapes(name: str, out: int, inp: int, bias: bool, quant: QuantConfig | None):
    """The checkpoint tensors of one linear module: name, shape and dtype."""
    if quant is None:
        yield f"{name}.weight", (out, inp), None
    elif quant.method == "awq":
        groups = -(-inp // quant.group_size)
        yield f"{name}.qweight", (inp, out // 8), torch.int32
        yield f"{name}.qzeros", (groups, out // 8), torch.int32
        yield f"{name}.scales", (groups, out), None
    else:
        yield f"{name}.weight", (out, inp), torch.int8 if quant.dtype == "int8" else FP8_DTYPE
        yield f"{name}.weight_scale", (out,), torch.float32
    if bias:
        yield f"{name}.bias", (out,), None


def _mlp_shapes(prefix: str, h: int, inter: int, bias: bool, quant: QuantConfig | None):
    yield from _linear_shapes(f"{prefix}.gate", inter, h, bias, quant)
    yield from _linear_shapes(f"{prefix}.up", inter, h, bias, quant)
    yield from _linear_shapes(f"{prefix}.down", h, inter, bias, quant)


def canonical_shapes(config: ModelConfig, quant: QuantConfig | None = None):
    """Every canonical weight of a model, its shape and, for quantized tensors, its dtype
    (None: a floating-point weight), in load order."""
    h, q, kv, inter = config.hidden_size, config.q_size, config.kv_size, config.intermediate_size
    yield "embed", (config.vocab_size, h), None
    for i in range(config.num_layers):
        p = f"layers.{i}"
        yield f"{p}.input_norm", (h,), None
        for name, rows in (("q", q), ("k", kv), ("v", kv)):
            yield from _linear_shapes(f"{p}.attn.{name}", rows, h, config.qkv_bias, quant)
        if config.qk_norm:
            yield f"{p}.attn.q_norm", (config.head_dim,), None
            yield f"{p}.attn.k_norm", (config.head_dim,), None
        yield from _linear_shapes(f"{p}.attn.o", h, q, config.o_bias, quant)
        if config.sandwich_norms:
            yield f"{p}.attn_output_norm", (h,), None
        yield f"{p}.post_attn_norm", (h,), None
        if config.is_moe_layer(i):
            moe = config.moe
            yield f"{p}.mlp.router.weight", (moe.num_experts, h), None
            for e in range(moe.num_experts):
                yield from _mlp_shapes(f"{p}.mlp.experts.{e}", h, moe.intermediate_size,
                                       config.mlp_bias, quant)
        else:
            yield from _mlp_shapes(f"{p}.mlp", h, inter, config.mlp_bias, quant)
        if config.sandwich_norms:
            yield f"{p}.mlp_output_norm", (h,), None
    yield "norm", (h,), None
    if not config.tie_word_embeddings:
        yield "lm_head", (config.vocab_size, h), None


def iter_dummy(
    config: ModelConfig, seed: int = 0, std: float = 0.02, device: str | torch.device = "cpu",
    quant: QuantConfig | None = None, shapes: Iterable | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Random weights of the right shapes (benchmarks of big architectures without their files):
    norms near 1, everything else normal with a small ``std``, reproducible from ``seed``.
    Quantized linears get random codes with scales that give the same spread. Generating them
    on the target ``device`` keeps an 8B model's load to seconds. Norms that scale by
    ``1 + w`` (``norm_offset``) are near 0 instead. ``shapes`` (name, shape, dtype triples)
    replaces :func:`canonical_shapes` for an architecture whose layers hold other tensors."""
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, shape, dtype in shapes if shapes is not None else canonical_shapes(config, quant):
        if dtype is torch.int32:  # AWQ codes: 8 random nibbles per int32
            tensor = torch.randint(-2**31, 2**31 - 1, shape, generator=generator, device=device,
                                   dtype=torch.int32)
        elif dtype is not None and name.endswith(".weight"):  # 8-bit codes
            codes = torch.randint(-127, 128, shape, generator=generator, device=device)
            tensor = codes.to(torch.float32).to(dtype)
        elif name.endswith(".weight_scale"):
            tensor = torch.full(shape, std * 3 ** 0.5 / 127, device=device)
        elif name.endswith(".scales"):  # codes minus zeros, both uniform on 0..15: std 6.5 s
            tensor = torch.full(shape, std / 6.5, device=device)
        else:
            tensor = torch.randn(shape, generator=generator, device=device) * std
            if name.endswith("norm") and not config.norm_offset:
                tensor += 1.0
        yield name, tensor
