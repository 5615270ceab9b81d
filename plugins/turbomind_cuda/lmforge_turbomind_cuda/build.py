"""Compile the engine's CUDA sources into ``lib/libturbomind.so`` with nvcc.

Runs when the distribution is built or installed (``setup.py``) on a machine with nvcc, and by
hand: ``python -m lmforge_turbomind_cuda.build [--archs 90a]``. The library has a plain C ABI, so
one build serves any torch. A stamp beside it records the sources' hash and the targets; a
library built from the current sources is kept (unless other targets are asked for), so
reinstalling on a machine that received a built library (the GPU test machine) costs nothing.

``LMFORGE_TURBOMIND_ARCHS`` (comma-separated, e.g. ``90a`` or ``80,86,89,90a``) picks the
targets; ``LMFORGE_NVCC`` the compiler.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SOURCES = PACKAGE / "csrc"
LIB_DIR = PACKAGE / "lib"
LIB_NAME = "libturbomind.so"
STAMP_NAME = "build.json"
DEFAULT_ARCHS = ("80", "86", "89", "90a")


class BuildError(RuntimeError):
    """The library could not be built; the message says why in one sentence."""


def find_nvcc() -> str | None:
    """nvcc from ``LMFORGE_NVCC``, ``CUDA_HOME``, /usr/local/cuda or ``PATH``."""
    candidates = [os.environ.get("LMFORGE_NVCC")]
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            candidates.append(str(Path(home) / "bin" / "nvcc"))
    candidates.append(shutil.which("nvcc"))
    return next((c for c in candidates if c and Path(c).is_file()), None)


def requested_archs() -> tuple[str, ...]:
    """The targets ``LMFORGE_TURBOMIND_ARCHS`` names (empty when it is unset)."""
    value = os.environ.get("LMFORGE_TURBOMIND_ARCHS", "")
    return tuple(a.strip() for a in value.split(",") if a.strip())


def sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCES.iterdir()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def nvcc_command(nvcc: str, archs: tuple[str, ...], out: Path) -> list[str]:
    """sm_XX machine code for every target, plus PTX of the oldest so newer GPUs can JIT it."""
    gencode = []
    for arch in archs:
        gencode += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    oldest = min(archs, key=lambda a: int(a.rstrip("a")))
    gencode += ["-gencode", f"arch=compute_{oldest},code=compute_{oldest}"]
    sources = sorted(str(p) for p in SOURCES.glob("*.cu"))
    return [
        nvcc, "-std=c++17", "-O3", "--threads", "0", "-shared", "-Xcompiler", "-fPIC",
        f"-DTM_ARCHS=\"{','.join(archs)}\"", *gencode, *sources, "-o", str(out), "-ldl",
    ]


def read_stamp(lib_dir: Path = LIB_DIR) -> dict:
    try:
        return json.loads((lib_dir / STAMP_NAME).read_text())
    except (OSError, ValueError):
        return {}


def build_library(lib_dir: Path = LIB_DIR, archs: tuple[str, ...] | None = None,
                  force: bool = False) -> Path:
    """Build the library in ``lib_dir`` for ``archs`` (default: ``LMFORGE_TURBOMIND_ARCHS``,
    else :data:`DEFAULT_ARCHS`); its path. A library built from the same sources is kept, unless
    targets were named and differ."""
    archs = archs or requested_archs()
    out = lib_dir / LIB_NAME
    digest = sources_digest()
    stamp = read_stamp(lib_dir)
    if (not force and out.is_file() and stamp.get("sources") == digest
            and (not archs or tuple(stamp.get("archs", ())) == archs)):
        return out
    archs = archs or DEFAULT_ARCHS
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc was not found: install the CUDA toolkit (12 or newer) or set "
                         "CUDA_HOME, then reinstall lmforge-turbomind-cuda.")
    lib_dir.mkdir(parents=True, exist_ok=True)
    tmp = lib_dir / f".{LIB_NAME}.tmp"
    start = time.time()
    result = subprocess.run(nvcc_command(nvcc, archs, tmp), capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise BuildError(f"nvcc failed to build {LIB_NAME} (its messages are above).")
    tmp.replace(out)
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    release = next((line.strip() for line in version.splitlines() if "release" in line), "")
    (lib_dir / STAMP_NAME).write_text(json.dumps({
        "sources": digest, "archs": list(archs), "nvcc": release,
        "seconds": round(time.time() - start, 1),
    }, indent=1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", help="comma-separated targets, e.g. 90a or 80,86,89,90a")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    archs = tuple(a for a in (args.archs or "").split(",") if a) or None
    try:
        path = build_library(archs=archs, force=args.force)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stamp = read_stamp()
    print(f"{path} ({', '.join(stamp['archs'])}; {stamp['nvcc']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
