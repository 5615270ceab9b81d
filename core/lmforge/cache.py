"""lmforge's cache folder on disk: downloaded calibration text, tokenized benchmark workloads."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LMFORGE_CACHE_DIR"


def cache_root() -> Path:
    """``$LMFORGE_CACHE_DIR``, or ``~/.cache/lmforge``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lmforge")
