"""What ``lmforge check_env`` reports: platform, toolchain, GPUs, package versions, plugins.

Collecting never fails: a tool or package that is missing is reported as such. torch is imported
here only when the report is made, never when the CLI starts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ..plugins import call_hook, plugin_infos
from ..version import __version__

KEY_PACKAGES = (
    "torch", "transformers", "triton", "tokenizers", "fastapi", "uvicorn", "pydantic", "gguf",
    "numpy", "pluggy", "typer", "rich",
)
NOT_FOUND = "not found"


def _run_text(cmd: list[str]) -> str:
    """The standard output of ``cmd``, or ``""`` when it cannot run."""
    if shutil.which(cmd[0]) is None:
        return ""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _first_line(cmd: list[str], pick: str = "") -> str:
    """The first output line of ``cmd`` containing ``pick``, or NOT_FOUND."""
    out = _run_text(cmd)
    lines = [line.strip() for line in out.splitlines() if pick in line and line.strip()]
    return lines[0] if lines else NOT_FOUND


# nvidia-smi's names for the PCIe path between two GPUs that are not linked by NVLink.
_PCIE_PATHS = {
    "PIX": "PCIe through one switch",
    "PXB": "PCIe through several switches",
    "PHB": "PCIe through the CPU's host bridge",
    "NODE": "PCIe across host bridges",
    "SYS": "PCIe across CPU sockets",
}
_GPU = re.compile(r"^GPU\d+$")


def _link(cell: str) -> str:
    if cell.startswith("NV") and cell[2:].isdigit():
        return f"NVLink ({cell[2:]} links)"
    return f"{_PCIE_PATHS[cell]} ({cell})" if cell in _PCIE_PATHS else cell


def gpu_topology(matrix: str) -> str:
    """How each pair of GPUs is linked (NVLink or a PCIe path), from ``nvidia-smi topo -m``;
    ``""`` when the matrix names fewer than two GPUs."""
    rows = [re.sub(r"\x1b\[[0-9;]*m", "", line).split() for line in matrix.splitlines()]
    header = next((r for r in rows if r and _GPU.match(r[0]) and len(r) > 1 and _GPU.match(r[1])),
                  None)
    if header is None:
        return ""
    gpus = [name for name in header if _GPU.match(name)]
    links: dict[str, str] = {}
    for row in rows:
        if len(row) > len(gpus) and row[0] in gpus and row is not header:
            i = gpus.index(row[0])
            for j in range(i + 1, len(gpus)):
                links[f"{gpus[i]}-{gpus[j]}"] = _link(row[1 + j])
    kinds = set(links.values())
    if len(kinds) == 1 and len(gpus) > 2:
        return f"every pair of the {len(gpus)} GPUs: {kinds.pop()}"
    return "; ".join(f"{pair}: {link}" for pair, link in links.items())


def _cuda_home() -> str:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if not home and os.path.isdir("/usr/local/cuda"):
        home = "/usr/local/cuda"
    return home or NOT_FOUND


def _nvcc(cuda_home: str) -> str:
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    return _first_line([nvcc if os.path.exists(nvcc) else "nvcc", "-V"], pick="release")


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    """Installed version of each distribution, or ``"not installed"``."""
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def _torch_info() -> dict[str, Any]:
    try:
        import torch
    except ImportError as exc:
        return {"CUDA available": False, "PyTorch": f"not importable ({exc})"}
    info: dict[str, Any] = {"CUDA available": torch.cuda.is_available()}
    if info["CUDA available"]:
        by_name: dict[str, list[str]] = {}
        for i in range(torch.cuda.device_count()):
            by_name.setdefault(torch.cuda.get_device_name(i), []).append(str(i))
        for name, ids in by_name.items():
            info[f"GPU {','.join(ids)}"] = name
        if torch.cuda.device_count() > 1:  # what tensor parallelism's all-reduce crosses
            matrix = _run_text(["nvidia-smi", "topo", "-m"])
            info["GPU topology"] = (gpu_topology(matrix) if matrix else "") or \
                "unknown (nvidia-smi topo -m gave no matrix)"
    info["PyTorch"] = str(torch.__version__)  # TorchVersion, a str subclass yaml cannot dump
    info["PyTorch CUDA"] = torch.version.cuda or "none (CPU build)"
    details = torch.__config__.show().strip().splitlines()
    info["PyTorch compiling details"] = "\n".join(line.rstrip() for line in details)
    return info


def collect_env() -> dict[str, Any]:
    """The environment report as plain data (str, bool, dict, list), ready to print or dump."""
    cuda_home = _cuda_home()
    report: dict[str, Any] = {
        "sys.platform": sys.platform,
        "Python": sys.version.replace("\n", " "),
        "lmforge": __version__,
    }
    report.update(_torch_info())
    report["CUDA_HOME"] = cuda_home
    report["NVCC"] = _nvcc(cuda_home)
    report["GCC"] = _first_line(["gcc", "--version"])
    report["packages"] = package_versions()

    def register(title: str, info: dict[str, str]) -> None:
        report[title] = dict(info)

    call_hook("register_env_info", register=register)
    report["plugins"] = [
        {k: v for k, v in asdict(info).items() if k != "module"} for info in plugin_infos()
    ]
    return report
