"""``lmforge convert``: write a model in the turbomind engine's own layout.

Only typer is imported at module level (the CLI imports this on every start); torch and the
conversion load inside the command.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from lmforge.cli.options import LoadFormatName


class ConvertFormat(str, Enum):
    hf = "hf"
    awq = "awq"


class ConvertDtype(str, Enum):
    auto = "auto"
    float16 = "float16"
    bfloat16 = "bfloat16"


def convert(
    model_path: Annotated[str, typer.Argument(
        help="An HF model folder or a GGUF file.", show_default=False)],
    dst_path: Annotated[Path, typer.Option(
        "--dst-path", help="The folder to write; it must not exist or be empty.")] = Path(
        "workspace"),
    tp: Annotated[int, typer.Option(
        "--tp", min=1, help="Tensor-parallel shards to write (a power of two).")] = 1,
    dtype: Annotated[ConvertDtype, typer.Option(
        "--dtype", help="Data type of the weights; auto keeps bfloat16 checkpoints in "
        "bfloat16 and writes float16 otherwise.")] = ConvertDtype.auto,
    model_format: Annotated[ConvertFormat, typer.Option(
        "--model-format", help="Format of the input weights.")] = ConvertFormat.hf,
    group_size: Annotated[int, typer.Option(
        "--group-size", min=0, help="AWQ quantization group size (awq models only).")] = 0,
    load_format: Annotated[LoadFormatName, typer.Option(
        "--load-format", help="'dummy' writes random weights from the config alone, for "
        "testing.")] = LoadFormatName.auto,
) -> None:
    """Convert a model to the turbomind engine's layout (fused, sharded, mapped as it loads)."""
    import time

    import torch
    from lmforge import registry
    from lmforge.cli.console import console
    from lmforge.engine.support import check_model
    from lmforge.errors import ConfigError
    from lmforge.messages import TurbomindEngineConfig
    from lmforge.model.loader import load_model_info

    from .converted import write_converted
    from .layout import check_tp

    if model_format is ConvertFormat.awq or group_size:
        raise ConfigError("AWQ (W4A16) models are not supported by the turbomind engine yet; "
                          "convert an fp16 or bf16 model (--model-format hf, no --group-size).")
    if dst_path.exists() and (not dst_path.is_dir() or any(dst_path.iterdir())):
        raise ConfigError(f"--dst-path {dst_path} is not an empty folder; choose a new one.")
    info = load_model_info(model_path, load_format=load_format.value, dtype=dtype.value)
    check_model(registry.get_engine("turbomind"), info, TurbomindEngineConfig())
    check_tp(info.config, tp)
    name = dtype.value
    if name == "auto":
        name = "bfloat16" if info.config.torch_dtype.removeprefix("torch.") == "bfloat16" \
            else "float16"
    start = time.time()
    record = write_converted(info, dst_path, getattr(torch, name), tp=tp,
                             model_format=model_format.value)
    size = sum((dst_path / f).stat().st_size for f in record["files"])
    console.print(f"Converted {model_path} to {dst_path}: {info.config.num_layers} layers, "
                  f"tp {tp}, {name}, {size / 2**30:.2f} GiB in {time.time() - start:.1f} s.",
                  markup=False)
