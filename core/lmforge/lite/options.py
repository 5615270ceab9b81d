"""What every ``lmforge lite`` command needs before it quantizes: the checked model, the device,
the compute dtype and the calibration samples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, ModelLoadError
from ..model.loader import ModelInfo, load_model_info
from .datasets import DEFAULT_DATASET, calibration_samples, load_documents

DEVICES = ("cuda", "cpu")


@dataclass
class CalibOptions:
    """The calibration flags (LMDeploy's names); ``device`` None picks CUDA when there is one."""

    dataset: str = DEFAULT_DATASET
    samples: int = 128
    seqlen: int = 2048
    batch_size: int = 1
    device: str | None = None
    seed: int = 0

    def check(self) -> None:
        if self.samples < 0:
            raise ConfigError(f"--calib-samples must be 0 or more, got {self.samples}.")
        if self.seqlen < 1:
            raise ConfigError(f"--calib-seqlen must be at least 1, got {self.seqlen}.")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}.")


def resolve_device(name: str | None) -> torch.device:
    """``cuda`` or ``cpu``; ``None`` means CUDA when a GPU is visible."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in DEVICES:
        raise ConfigError(f"--device {name} is not supported; use cuda or cpu.")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda needs a CUDA GPU and none is visible; pass --device cpu.")
    return torch.device(name)


def compute_dtype(info: ModelInfo, device: torch.device) -> torch.dtype:
    """float32 on the CPU (fast there and exact); the model's own 16-bit dtype on a GPU."""
    if device.type == "cpu":
        return torch.float32
    return {"bfloat16": torch.bfloat16, "float32": torch.float32}.get(
        info.config.torch_dtype, torch.float16
    )


def open_model(model_path: str | Path) -> ModelInfo:
    """The model's info, refused with one sentence if a quantizer cannot start from it."""
    info = load_model_info(model_path)
    quant = info.hf_config.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "unknown") if isinstance(quant, dict) else "unknown"
        raise ModelLoadError(
            f"{model_path} is already quantized (quantization_config: {method}); pass the "
            "unquantized model."
        )
    if info.config.hidden_act != "silu":
        raise ModelLoadError(
            f"lmforge lite calibrates SiLU-gated models; {model_path} uses "
            f"{info.config.hidden_act}."
        )
    return info


def load_samples(info: ModelInfo, options: CalibOptions) -> torch.Tensor:
    """``[samples, seqlen]`` token ids of the calibration text, with the model's tokenizer."""
    from ..tokenizer import Tokenizer

    if options.seqlen > info.config.max_position_embeddings:
        raise ConfigError(
            f"--calib-seqlen {options.seqlen} is longer than the model's context "
            f"({info.config.max_position_embeddings} tokens); pass a smaller value."
        )
    tokenizer = Tokenizer.from_pretrained(info.tokenizer_path, gguf_file=info.tokenizer_gguf_file)
    documents = load_documents(options.dataset)
    return calibration_samples(tokenizer, documents, options.samples, options.seqlen, options.seed)
