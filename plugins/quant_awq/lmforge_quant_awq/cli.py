"""The ``lmforge lite auto_awq`` command (the ``lite`` group imports it when it runs)."""

from __future__ import annotations

from typing import Annotated

import typer
from lmforge.cli import lite_options as opt
from lmforge.cli.console import console

WEIGHT_PANEL = "Weights"


def auto_awq(
    model: opt.LiteModelPath,
    work_dir: opt.WorkDir = "./work_dir",
    calib_dataset: opt.CalibDataset = opt.CALIB_DEFAULTS["calib_dataset"],
    calib_samples: opt.CalibSamples = opt.CALIB_DEFAULTS["calib_samples"],
    calib_seqlen: opt.CalibSeqlen = opt.CALIB_DEFAULTS["calib_seqlen"],
    batch_size: opt.BatchSize = opt.CALIB_DEFAULTS["batch_size"],
    search_scale: Annotated[bool, typer.Option(
        "--search-scale/--no-search-scale",
        help="Search each group's scales on a grid of 20 ratios (AWQ). Without it the scales "
        "are mean|x|^0.5.", rich_help_panel=opt.CALIB_PANEL)] = True,
    device: opt.Device = None,
    w_bits: Annotated[int, typer.Option(
        "--w-bits", help="Bits per weight (4).", rich_help_panel=WEIGHT_PANEL)] = 4,
    w_sym: Annotated[bool, typer.Option(
        "--w-sym", help="Symmetric quantization (zero point 8) instead of a zero point per "
        "group.", rich_help_panel=WEIGHT_PANEL)] = False,
    w_group_size: Annotated[int, typer.Option(
        "--w-group-size", help="Input channels that share a scale and zero point; must divide "
        "every linear's input size.", rich_help_panel=WEIGHT_PANEL)] = 128,
) -> None:
    """Quantize a model's weights to 4 bits with AWQ (W4A16) and write an HF folder in AutoAWQ's GEMM layout.

    Layers run one at a time on --device while the model stays in host memory. --calib-samples 0 skips calibration (plain round-to-nearest). The folder loads in lmforge (`lmforge chat WORK_DIR`), vLLM and LMDeploy.
    """
    from .quantize import AwqOptions
    from .quantize import auto_awq as run

    calib = opt.calib_options(calib_dataset, calib_samples, calib_seqlen, batch_size, device)
    options = AwqOptions(w_bits=w_bits, w_sym=w_sym, w_group_size=w_group_size,
                         search_scale=search_scale)
    out = run(model, work_dir, calib, options)
    console.print(f"Wrote the AWQ model to {out}.", markup=False, soft_wrap=True)
