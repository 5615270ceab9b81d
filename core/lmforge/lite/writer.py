"""Writing a quantized model as an HF folder, so that an interrupted run leaves nothing that looks
finished.

Everything is written into a hidden staging folder beside ``--work-dir``
(``.<name>.partial``): safetensors shards as layers finish (so host memory holds one shard at a
time), then the index, tokenizer files and, last, ``config.json``. Only then does the folder
take its real name (or, when the work dir already holds a calibration, its files move in with
``config.json`` last). Ctrl-C or ``kill`` removes the staging folder; after ``kill -9`` the
next run removes it.
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from ..model.loader import ModelInfo
from .stats import CALIBRATION_FILES

SHARD_BYTES = 2 << 30
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".index.json")


class HfNames:
    """Canonical weight names -> the HF names of the model's architecture (the inverse of its
    adapter's name tables), for plain weights and for the tensors quantized linears add
    (``qweight``, ``qzeros``, ``scales``, ``scale``)."""

    def __init__(self, info: ModelInfo) -> None:
        adapter = info.adapter
        self.architecture = info.architecture
        self.globals = {canon: hf for hf, canon in adapter.global_names.items()}
        self.layer_tensors: dict[str, str] = {}
        # Linear modules, canonical -> HF: from the adapter's module table where it has one,
        # else from its per-tensor names of the modules' weights.
        self.modules: dict[str, str] = {}
        for hf, canon in adapter.layer_names.items():
            if canon.endswith(".weight"):
                self.modules[canon.removesuffix(".weight")] = hf.removesuffix(".weight")
            elif "." not in canon:  # norms
                self.layer_tensors[canon] = hf
        self.modules.update({c: hf for hf, c in getattr(adapter, "layer_linears", {}).items()})

    def hf(self, name: str) -> str:
        """The HF name of canonical ``name``; one sentence if the architecture has none."""
        if name in self.globals:
            return self.globals[name]
        parts = name.split(".")
        if parts[0] == "layers" and len(parts) >= 3:
            prefix, rest = f"model.layers.{parts[1]}.", ".".join(parts[2:])
            if rest in self.layer_tensors:
                return prefix + self.layer_tensors[rest]
            module, _, suffix = rest.rpartition(".")
            if module in self.modules:
                return f"{prefix}{self.modules[module]}.{suffix}"
        raise ModelLoadError(
            f"lmforge lite cannot write {self.architecture} checkpoints: its layout has no "
            f"tensor of its own for {name}."
        )


class CheckpointWriter:
    """``with CheckpointWriter(work_dir, info) as w: w.add(name, t) ...; w.finish(config)``.

    Leaving the block by an exception (Ctrl-C included) removes the staging folder.
    """

    def __init__(self, work_dir: Path, info: ModelInfo, shard_bytes: int = SHARD_BYTES) -> None:
        self.work_dir = Path(work_dir)
        self.info = info
        self.names = HfNames(info)
        self.shard_bytes = shard_bytes
        self.staging = self.work_dir.parent / f".{self.work_dir.name}.partial"
        self._buffer: dict[str, torch.Tensor] = {}
        self._buffered = 0
        self._shards: list[tuple[Path, list[str]]] = []

    def __enter__(self) -> CheckpointWriter:
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        # A plain `kill` (SIGTERM) unwinds like Ctrl-C, so the staging folder goes too.
        self._sigterm = None
        if threading.current_thread() is threading.main_thread():
            self._sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._sigterm is not None:
            signal.signal(signal.SIGTERM, self._sigterm)
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)

    def check(self, names: list[str]) -> None:
        """Fail now, before any work, if one of ``names`` cannot be written."""
        for name in names:
            self.names.hf(name)

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Queue canonical tensor ``name``; a full shard is written out at once."""
        self._buffer[self.names.hf(name)] = tensor.detach().to("cpu").contiguous()
        self._buffered += tensor.numel() * tensor.element_size()
        if self._buffered >= self.shard_bytes:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        from safetensors.torch import save_file

        path = self.staging / f"part-{len(self._shards):05d}.safetensors"
        save_file(self._buffer, str(path), metadata={"format": "pt"})
        self._shards.append((path, list(self._buffer)))
        self._buffer, self._buffered = {}, 0

    def finish(self, config: dict[str, Any]) -> Path:
        """Write the last shard, the index, the tokenizer and ``config`` as ``config.json``, then
        give the folder its real name. Returns the work dir."""
        self._flush()
        total = len(self._shards)
        weight_map = {}
        for i, (path, names) in enumerate(self._shards):
            final = "model.safetensors" if total == 1 else f"model-{i + 1:05d}-of-{total:05d}.safetensors"
            path.rename(self.staging / final)
            weight_map.update(dict.fromkeys(names, final))
        if total > 1:
            size = sum((self.staging / f).stat().st_size for f in set(weight_map.values()))
            index = {"metadata": {"total_size": size}, "weight_map": dict(sorted(weight_map.items()))}
            (self.staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        copy_tokenizer(self.info, self.staging)
        (self.staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        _publish(self.staging, self.work_dir)
        return self.work_dir


def output_config(info: ModelInfo, quantization_config: dict[str, Any], torch_dtype: str) -> dict:
    """The source model's HF config (a GGUF file's, rebuilt from its metadata) with the
    quantization recorded and the dtype of the unquantized tensors."""
    config = dict(info.hf_config)
    if info.format == "gguf":
        from ..chat_template.model_files import ModelFiles

        config.setdefault("hidden_act", info.config.hidden_act)
        config.setdefault("_name_or_path", ModelFiles.from_path(info.path).names[0])
    config["torch_dtype"] = torch_dtype
    if "dtype" in config:
        config["dtype"] = torch_dtype
    config["quantization_config"] = quantization_config
    return config


def copy_tokenizer(info: ModelInfo, folder: Path) -> None:
    """Tokenizer, chat template and generation config next to the weights: copied from an HF
    folder, or saved by transformers from a GGUF file."""
    if info.tokenizer_gguf_file is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            str(info.tokenizer_path), gguf_file=info.tokenizer_gguf_file
        )
        tokenizer.save_pretrained(str(folder))
        return
    for path in sorted(Path(info.tokenizer_path).iterdir()):
        if (path.is_file() and path.name != "config.json" and path.name not in CALIBRATION_FILES
                and not path.name.endswith(_WEIGHT_SUFFIXES)):
            shutil.copy2(path, folder / path.name)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _publish(staging: Path, work_dir: Path) -> None:
    if not work_dir.exists():
        staging.rename(work_dir)
        return
    # The work dir holds a calibration (or nothing): move in, config.json last.
    for path in sorted(staging.iterdir(), key=lambda p: p.name == "config.json"):
        path.replace(work_dir / path.name)
    staging.rmdir()
