"""How much memory this process holds: what the start-up log and the start-up benchmark report."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def resident_bytes() -> int:
    """The process's resident set size now (0 where ``/proc`` is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * resource.getpagesize()


def peak_resident_bytes() -> int:
    """The most resident memory the process has held so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux counts kilobytes


def format_bytes(count: int) -> str:
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def describe_memory() -> str:
    """``"812 MiB resident (peak 1.02 GiB)"``, plus the GPU's allocation when CUDA is in use."""
    text = f"{format_bytes(resident_bytes())} resident (peak {format_bytes(peak_resident_bytes())})"
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        text += f", {format_bytes(torch.cuda.memory_allocated())} allocated on the GPU"
    return text
