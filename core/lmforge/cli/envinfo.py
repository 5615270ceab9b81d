"""What ``lmforge check_env`` reports: platform, toolchain, GPUs, package versions, plugins.

Collecting never fails: a tool or package that is missing is reported as such. torch is imported
here only when the report is made, never when the CLI starts.
"""

from __future__ import annotations

import os
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


def _first_line(cmd: list[str], pick: str = "") -> str:
    """The first output line of ``cmd`` containing ``pick``, or NOT_FOUND."""
    if shutil.which(cmd[0]) is None:
        return NOT_FOUND
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return NOT_FOUND
    lines = [line.strip() for line in out.splitlines() if pick in line and line.strip()]
    return lines[0] if lines else NOT_FOUND


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
