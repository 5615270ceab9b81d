"""The kernel modules import on a machine without a GPU: ``@triton.jit`` compiles at the first
launch, not at import. Checked in a fresh interpreter with no GPU visible and the Triton
interpreter off, as the engine would import them."""

import os
import subprocess
import sys
from pathlib import Path

import lmforge_torch_triton.ops

OPS_DIR = Path(lmforge_torch_triton.ops.__file__).parent
KERNEL_MODULES = sorted(p.stem for p in OPS_DIR.glob("triton_*.py"))

IMPORT_ALL = """
import importlib, sys
import torch
assert not torch.cuda.is_available()
from triton.runtime.jit import JITFunction
for name in sys.argv[1:]:
    module = importlib.import_module("lmforge_torch_triton.ops." + name)
    kernels = [v for v in vars(module).values() if isinstance(v, JITFunction)]
    assert kernels, name + " defines no Triton kernel"
"""


def test_every_kernel_module_imports_without_a_gpu():
    assert {"triton_decode_attention", "triton_prefill_attention", "triton_rope"} <= set(
        KERNEL_MODULES
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, *KERNEL_MODULES], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
