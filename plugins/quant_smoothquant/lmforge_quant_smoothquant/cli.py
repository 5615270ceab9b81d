"""The ``lmforge lite smooth_quant`` command (the ``lite`` group imports it when it runs)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from lmforge.cli import lite_options as opt
from lmforge.cli.console import console


class QuantDtype(str, Enum):
    int8 = "int8"
    fp8 = "fp8"
    float8_e4m3fn = "float8_e4m3fn"  # LMDeploy's long name of fp8


def smooth_quant(
    model: opt.LiteModelPath,
    work_dir: opt.WorkDir = "./work_dir",
    calib_dataset: opt.CalibDataset = opt.CALIB_DEFAULTS["calib_dataset"],
    calib_samples: opt.CalibSamples = opt.CALIB_DEFAULTS["calib_samples"],
    calib_seqlen: opt.CalibSeqlen = opt.CALIB_DEFAULTS["calib_seqlen"],
    batch_size: opt.BatchSize = opt.CALIB_DEFAULTS["batch_size"],
    search_scale: Annotated[bool, typer.Option(
        "--search-scale/--no-search-scale",
        help="Search each group's migration strength α on a grid of 20 against the quantized "
        "output. Without it α is 0.5.", rich_help_panel=opt.CALIB_PANEL)] = False,
    device: opt.Device = None,
    quant_dtype: Annotated[QuantDtype, typer.Option(
        "--quant-dtype", help="8-bit format of weights and activations: int8, or fp8 (e4m3, "
        "for GPUs with fp8 tensor cores).")] = QuantDtype.int8,
) -> None:
    """Quantize a model's weights and activations to 8 bits (W8A8) with SmoothQuant and write an HF folder in LMDeploy's smooth_quant layout.

    Layers run one at a time on --device while the model stays in host memory. --calib-samples 0 skips smoothing. A --work-dir holding a calibration from `lmforge lite calibrate` with the same --calib-dataset, --calib-samples and --calib-seqlen is reused without reading the text again.
    """
    from .quantize import SmoothQuantOptions
    from .quantize import smooth_quant as run

    calib = opt.calib_options(calib_dataset, calib_samples, calib_seqlen, batch_size, device)
    dtype = "fp8" if quant_dtype is QuantDtype.float8_e4m3fn else quant_dtype.value
    out = run(model, work_dir, calib, SmoothQuantOptions(quant_dtype=dtype, search_scale=search_scale))
    console.print(f"Wrote the W8A8 ({dtype}) model to {out}.", markup=False, soft_wrap=True)
