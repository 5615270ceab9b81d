"""Find a model on disk, read its configuration and stream its weights under canonical names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import LmforgeError, ModelLoadError
from .adapter import ModelAdapter, eos_ids
from .config import ModelConfig
from .gguf import gguf_hf_config, iter_gguf
from .gguf_file import GGUFFile
from .quant import QuantConfig, read_quant_config
from .weights import (
    Select,
    find_checkpoint,
    iter_bin,
    iter_dummy,
    iter_safetensor_parts,
    iter_safetensors,
    take,
)

LOAD_FORMATS = ("auto", "dummy")


@dataclass
class ModelInfo:
    """Everything an engine needs to know about a model before building it.

    ``format`` is ``safetensors``, ``bin``, ``gguf``, ``dummy`` (random weights from the
    config alone) or the name of an engine's converted layout (see ``CONVERTED_MARKER``). The
    tokenizer loads from ``tokenizer_path`` (and ``tokenizer_gguf_file`` in it); ``gguf`` is the
    GGUF file parsed once, shared by the config, weights and chat template.
    """

    path: Path
    format: str
    hf_config: dict[str, Any]
    config: ModelConfig
    adapter: ModelAdapter
    session_len: int
    eos_token_ids: list[int]
    tokenizer_path: Path
    tokenizer_gguf_file: str | None = None
    # How the checkpoint's linears are quantized (config.json's quantization_config), if at all.
    quant: QuantConfig | None = None
    dtype: str = "auto"
    seed: int = 0
    shards: list[Path] = field(default_factory=list)
    gguf: GGUFFile | None = field(default=None, repr=False)

    @property
    def architecture(self) -> str:
        return self.config.architecture

    @property
    def load_format(self) -> str:
        return "dummy" if self.format == "dummy" else "auto"

    def iter_weights(
        self, device: str | torch.device = "cpu", select: Select | None = None
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """Canonical ``(name, tensor)`` pairs, one tensor at a time, shard by shard.

        Checkpoint tensors come on the CPU in their stored dtype (GGUF: dequantized float32);
        dummy weights are float32 and made directly on ``device``. With ``select`` (one
        tensor-parallel rank's slices), each tensor is cut to ``select(name, shape)`` as it is
        read; from safetensors only those bytes are read, elsewhere one whole tensor at a time.
        """
        if self.format == "safetensors" and select is not None:
            yield from iter_safetensor_parts(self.shards, self.adapter.map_weights, select)
            return
        for name, tensor in self._iter_whole(device):
            yield name, take(tensor, select(name, tuple(tensor.shape))) if select else tensor

    def _iter_whole(self, device: str | torch.device) -> Iterator[tuple[str, torch.Tensor]]:
        if self.format == "dummy":
            shapes = self.adapter.canonical_shapes(self.config, self.quant)
            yield from iter_dummy(self.config, seed=self.seed, device=device, quant=self.quant,
                                  shapes=shapes)
            return
        if self.format == "gguf":
            yield from iter_gguf(self.gguf or GGUFFile(self.shards[0]), self.hf_config)
            return
        if self.format not in ("safetensors", "bin"):
            raise ModelLoadError(
                f"{self.path} holds weights converted to the {self.format} layout; only an "
                "engine that reads that layout can load them."
            )
        raw = (
            iter_safetensors(self.shards) if self.format == "safetensors" else iter_bin(self.shards)
        )
        for name, tensor in raw:
            yield from self.adapter.map_weights(name, tensor)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot read {path}: {exc}.") from None


def _locate(model_path: str | Path) -> tuple[Path, Path | None]:
    """The model folder and its GGUF file, if the model is one."""
    path = Path(model_path).expanduser()
    if not path.exists():
        raise ModelLoadError(
            f"Model path {str(path)!r} does not exist; pass a local model folder, a .gguf file "
            "or a Hugging Face Hub id such as Qwen/Qwen2.5-0.5B-Instruct."
        )
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(
                f"Model file {path} is not a .gguf file; pass a model folder or a .gguf file."
            )
        return path.parent, path
    if (path / "config.json").is_file():
        return path, None
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return path, ggufs[0]
    if len(ggufs) > 1:
        raise ModelLoadError(f"{path} holds {len(ggufs)} .gguf files; pass the one to load.")
    raise ModelLoadError(f"No config.json in {path}; pass an HF model folder or a .gguf file.")


def _adapter(architecture: str, source: Path) -> ModelAdapter:
    from ..registry import load_object, models

    specs = models()
    if architecture not in specs:
        raise ModelLoadError(
            f"Architecture {architecture!r} of {source} is not supported; supported architectures: "
            f"{', '.join(specs) or 'none'}."
        )
    return load_object(specs[architecture].adapter)()


def load_model_info(
    model_path: str | Path,
    *,
    load_format: str = "auto",
    rope_scaling_factor: float = 0.0,
    session_len: int | None = None,
    dtype: str = "auto",
    seed: int = 0,
) -> ModelInfo:
    """Read a model's configuration without loading its weights.

    ``model_path`` is an HF model folder, a ``.gguf`` file or a folder holding exactly one.
    ``load_format="dummy"`` needs only ``config.json`` and gives seeded random weights.
    ``session_len`` defaults to the context length (times ``rope_scaling_factor`` when given).
    """
    if load_format not in LOAD_FORMATS:
        raise ModelLoadError(
            f"Unknown load_format {load_format!r}; use one of: {', '.join(LOAD_FORMATS)}."
        )
    folder, gguf_file = _locate(model_path)
    gguf = GGUFFile(gguf_file) if gguf_file is not None else None
    if gguf is not None:
        hf, source = gguf_hf_config(gguf), gguf_file
    else:
        source = folder / "config.json"
        hf = _read_json(source)
    architectures = hf.get("architectures") or []
    if not architectures:
        raise ModelLoadError(f"{source} does not name the model's architectures.")
    adapter = _adapter(architectures[0], source)
    try:
        config = adapter.config_from_hf(hf, rope_scaling_factor=rope_scaling_factor)
    except LmforgeError:
        raise
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"Cannot read the model configuration in {source}: {exc}.") from None

    eos = list(config.eos_token_ids)
    generation = folder / "generation_config.json"
    if gguf_file is None and generation.is_file():
        eos += [i for i in eos_ids(_read_json(generation).get("eos_token_id")) if i not in eos]
    config.eos_token_ids = eos

    quant = read_quant_config(hf) if gguf_file is None else None
    if load_format == "dummy":
        fmt, shards = "dummy", []
    elif gguf_file is not None:
        fmt, shards = "gguf", [gguf_file]
    else:
        fmt, shards = find_checkpoint(folder)

    if session_len is None:
        scale = rope_scaling_factor if rope_scaling_factor > 0 else 1.0
        session_len = int(config.max_position_embeddings * scale)
    return ModelInfo(
        path=gguf_file or folder,
        format=fmt,
        hf_config=hf,
        config=config,
        adapter=adapter,
        session_len=session_len,
        eos_token_ids=eos,
        tokenizer_path=folder,
        tokenizer_gguf_file=gguf_file.name if gguf_file is not None else None,
        quant=quant,
        dtype=dtype,
        seed=seed,
        shards=shards,
        gguf=gguf,
    )
