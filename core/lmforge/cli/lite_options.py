"""Options shared by the ``lmforge lite`` commands, with LMDeploy's names and defaults.

A quantizer plugin declares ``work_dir: lite_options.WorkDir = "./work_dir"`` and so on, then
builds a :class:`lmforge.lite.options.CalibOptions` with :func:`calib_options`.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from ..lite.datasets import DEFAULT_DATASET, dataset_help

CALIB_PANEL = "Calibration"


class LiteDevice(str, Enum):
    cuda = "cuda"
    cpu = "cpu"


LiteModelPath = Annotated[
    str,
    typer.Argument(help="An HF model folder or a GGUF file (a GGUF model is written out as an "
                   "HF folder).", show_default=False),
]
WorkDir = Annotated[
    str,
    typer.Option("--work-dir", help="Folder for the results; must be new or empty (or hold only "
                 "a calibration from `lmforge lite calibrate`, which is then reused)."),
]
CalibDataset = Annotated[
    str,
    typer.Option("--calib-dataset", help=dataset_help(), rich_help_panel=CALIB_PANEL),
]
CalibSamples = Annotated[
    int,
    typer.Option("--calib-samples", min=0, help="Number of calibration samples.",
                 rich_help_panel=CALIB_PANEL),
]
CalibSeqlen = Annotated[
    int,
    typer.Option("--calib-seqlen", min=1, help="Tokens per calibration sample.",
                 rich_help_panel=CALIB_PANEL),
]
BatchSize = Annotated[
    int,
    typer.Option("--batch-size", min=1, help="Samples run through a layer at once: larger is "
                 "faster and takes more device memory.", rich_help_panel=CALIB_PANEL),
]
Device = Annotated[
    LiteDevice | None,
    typer.Option("--device", help="Where layers run; the model itself stays in host memory. "
                 "Default: cuda when a GPU is visible, else cpu.", show_default=False,
                 rich_help_panel=CALIB_PANEL),
]

CALIB_DEFAULTS: dict[str, Any] = {
    "calib_dataset": DEFAULT_DATASET, "calib_samples": 128, "calib_seqlen": 2048, "batch_size": 1,
}


def calib_options(calib_dataset: str, calib_samples: int, calib_seqlen: int, batch_size: int,
                  device: LiteDevice | None):
    """The :class:`CalibOptions` of a command's calibration flags."""
    from ..lite.options import CalibOptions

    return CalibOptions(
        dataset=calib_dataset, samples=calib_samples, seqlen=calib_seqlen,
        batch_size=batch_size, device=device.value if device is not None else None,
    )
