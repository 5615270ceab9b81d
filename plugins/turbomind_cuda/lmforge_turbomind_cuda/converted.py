"""Converted model folders: what ``lmforge convert`` writes and the runner maps from disk.

A folder holds the model's ``config.json`` (and generation and tokenizer files), one folder of
weights per tensor-parallel rank (``rank0/layers.0.safetensors``, ..., ``rank0/top.safetensors``;
one file per layer, so conversion streams and loading maps one layer at a time) and
``lmforge_converted.json``, which records how it was made.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from lmforge.errors import ConfigError, ModelLoadError
from lmforge.model.loader import ModelInfo
from lmforge.model.weights import CONVERTED_MARKER
from lmforge.version import __version__

from .layout import iter_layout

FORMAT = "turbomind"
FORMAT_VERSION = 1
# The model's own files that travel with the weights.
MODEL_FILES = (
    "generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
    "chat_template.jinja", "chat_template.json",
)
DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}


def read_record(folder: Path) -> dict:
    """The record of a converted folder (``lmforge_converted.json``)."""
    try:
        return json.loads((Path(folder) / CONVERTED_MARKER).read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot read {Path(folder) / CONVERTED_MARKER}: {exc}.") from None


def check_record(record: dict, folder: Path, tp: int) -> None:
    """Refuse a folder this engine cannot map as it is."""
    if record.get("format") != FORMAT or record.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"{folder} was converted for another engine or lmforge version; convert it again "
            "with `lmforge convert`."
        )
    if record.get("tp") != tp:
        raise ConfigError(
            f"{folder} was converted with --tp {record.get('tp')} but tp={tp} was asked for; "
            f"convert it again with --tp {tp} or run it with tp={record.get('tp')}."
        )


def iter_converted(folder: Path, rank: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of one rank, memory-mapped from disk one file at a time."""
    from safetensors import safe_open

    record = read_record(folder)
    for rel in record["files"]:
        if not rel.startswith(f"rank{rank}/"):
            continue
        with safe_open(str(Path(folder) / rel), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                yield name, f.get_tensor(name)


def _copy_model_files(info: ModelInfo, dst: Path) -> None:
    (dst / "config.json").write_text(json.dumps(info.hf_config, indent=2))
    source = Path(info.tokenizer_path)
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, dst / name)
    if info.tokenizer_gguf_file is not None:
        # A GGUF file carries its tokenizer inside; save it as ordinary tokenizer files.
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(source), gguf_file=info.tokenizer_gguf_file)
        tokenizer.save_pretrained(dst)


def write_converted(info: ModelInfo, dst: Path, dtype: torch.dtype, tp: int = 1,
                    model_format: str = "hf", device: str | torch.device = "cpu") -> dict:
    """Convert ``info``'s weights into ``dst``; returns the record written beside them.
    ``device`` is where the tensors are fused (a GPU makes dummy weights fast)."""
    from safetensors.torch import save_file

    dst.mkdir(parents=True, exist_ok=True)
    for r in range(tp):
        (dst / f"rank{r}").mkdir(exist_ok=True)
    files: list[str] = []
    layer: dict[int, list[dict[str, torch.Tensor]]] = {}
    top: list[dict[str, torch.Tensor]] = [{} for _ in range(tp)]

    def flush(index: int) -> None:
        for r, tensors in enumerate(layer.pop(index)):
            rel = f"rank{r}/layers.{index}.safetensors"
            save_file({k: v.cpu() for k, v in tensors.items()}, str(dst / rel))
            files.append(rel)

    current = None
    for name, shards in iter_layout(info, dtype, tp, device):
        if name.startswith("layers."):
            index = int(name.split(".")[1])
            if current is not None and index != current:
                flush(current)
            current = index
            ranks = layer.setdefault(index, [{} for _ in range(tp)])
            for r, t in enumerate(shards):
                ranks[r][name] = t
        else:
            for r, t in enumerate(shards):
                top[r][name] = t
    if current is not None:
        flush(current)
    for r, tensors in enumerate(top):
        rel = f"rank{r}/top.safetensors"
        # Tied embeddings share storage; safetensors stores each tensor once, so clone.
        save_file({k: v.cpu().clone() for k, v in tensors.items()}, str(dst / rel))
        files.append(rel)
    _copy_model_files(info, dst)
    record = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "tp": tp,
        "dtype": DTYPE_NAMES[dtype], "model_format": model_format,
        "architecture": info.architecture, "source": str(info.path),
        "source_format": info.format, "lmforge": __version__, "files": files,
    }
    (dst / CONVERTED_MARKER).write_text(json.dumps(record, indent=2))
    return record
