"""The turbomind tests reuse the pytorch engine's tiny-model builders and paged driver
(plugins/torch_triton/tests/torch_runner_helpers.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "torch_triton" / "tests"))
