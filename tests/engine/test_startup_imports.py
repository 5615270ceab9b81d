"""An engine start imports only what the chosen engine needs.

``from lmforge import pipeline`` and plugin discovery are on the path of every ``pipeline()``,
``lmforge chat`` and ``lmforge serve`` start; on the GPU host torch alone is most of their time,
so anything else they import is start-up time a user waits for. The tokenizer's libraries load
when the tokenizer does, the server's when a server starts, each engine's kernels when that
engine is chosen.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Packages no engine start needs before it loads a tokenizer: the tokenizer's (transformers and
# what it pulls in), GGUF reading, structured output, the HTTP server, the CLI's, Triton.
NOT_AT_START = (
    "transformers", "tokenizers", "huggingface_hub", "jinja2", "gguf", "llguidance", "triton",
    "fastapi", "starlette", "uvicorn", "pydantic", "accelerate", "safetensors", "rich", "typer",
)

IMPORT_AND_DISCOVER = """
from lmforge import TurbomindEngineConfig, pipeline
from lmforge import registry
registry.engines(); registry.models(); registry.quantizers()
"""

CHOOSE_TURBOMIND = IMPORT_AND_DISCOVER + """
spec = registry.get_engine("turbomind")
registry.load_object(spec.runner); registry.load_object(spec.config_class)
"""


def modules_after(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_import_and_plugin_discovery_stay_lean():
    modules = modules_after(IMPORT_AND_DISCOVER)
    assert "lmforge.pipeline" in modules and "lmforge_turbomind_cuda.plugin" in modules
    assert not sorted(m for m in modules if m.split(".")[0] in NOT_AT_START)
    # Plugins register names and lazy references; their engines' modules stay unimported.
    assert not sorted(m for m in modules
                      if m.startswith("lmforge_") and m.split(".")[-1] != "plugin"
                      and "." in m)


def test_choosing_turbomind_imports_nothing_of_the_pytorch_engine():
    pytest.importorskip("lmforge_turbomind_cuda")
    modules = modules_after(CHOOSE_TURBOMIND)
    assert "lmforge_turbomind_cuda.runner" in modules
    assert not sorted(m for m in modules if m.split(".")[0] in NOT_AT_START)
    assert not sorted(m for m in modules
                      if m.startswith("lmforge_torch_triton.") and m != "lmforge_torch_triton.plugin")
