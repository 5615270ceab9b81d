"""The CLI starts fast: listing commands never import torch, transformers or triton."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "triton")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["list"], ["plugins"]])
def test_command_imports_no_heavy_library(args):
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lmforge.cli.main", *args],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    imported = set(re.findall(r"^import time:.*\|\s+(\S+)$", done.stderr, re.MULTILINE))
    assert imported, "no -X importtime output"
    assert not {name for name in imported if name.split(".")[0] in HEAVY}
