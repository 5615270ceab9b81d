"""The ``--work-dir`` rules: lmforge never writes into a folder that holds anything but a
calibration from ``lmforge lite calibrate``, and a quantizer reuses that calibration."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .stats import CALIBRATION_FILES, META_FILE, Calibration, CalibrationMeta


def check_new_work_dir(work_dir: Path) -> None:
    """Refuse a work dir that exists and is not an empty folder."""
    if work_dir.exists() and (not work_dir.is_dir() or any(work_dir.iterdir())):
        raise ConfigError(
            f"--work-dir {work_dir} exists and is not empty; pass a new or empty folder."
        )


def reusable_calibration(work_dir: Path, wanted: CalibrationMeta) -> Calibration | None:
    """The calibration a work dir holds when it matches ``wanted``; None for a new or empty
    folder. Anything else in the folder is refused with one sentence."""
    if not work_dir.exists() or (work_dir.is_dir() and not any(work_dir.iterdir())):
        return None
    names = {p.name for p in work_dir.iterdir()} if work_dir.is_dir() else set()
    if not names or not names <= set(CALIBRATION_FILES) or META_FILE not in names:
        raise ConfigError(
            f"--work-dir {work_dir} exists and is not empty; pass a new or empty folder, or one "
            "that holds only a calibration from `lmforge lite calibrate`."
        )
    calibration = Calibration.load(work_dir)
    if not calibration.meta.same_run(wanted):
        have = calibration.meta
        raise ConfigError(
            f"--work-dir {work_dir} holds a calibration of {have.model} on {have.dataset} "
            f"({have.samples} samples of {have.seqlen} tokens), not of this model and these "
            "calibration flags (--calib-dataset, --calib-samples, --calib-seqlen); pass the same flags or a new --work-dir."
        )
    return calibration
