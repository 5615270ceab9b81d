"""Load the model a benchmark runs: a real checkpoint, or a config folder with dummy weights."""

from __future__ import annotations

import logging
from pathlib import Path

from ..model.weights import CONVERTED_MARKER

logger = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "*.pth")


def has_weights(model_path: str | Path) -> bool:
    """Whether ``model_path`` is a weight file or a folder that holds one (or a converted
    folder, whose weights lie in per-rank folders)."""
    path = Path(model_path)
    if path.is_file() or (path / CONVERTED_MARKER).is_file():
        return True
    return any(next(path.glob(pattern), None) is not None for pattern in WEIGHT_PATTERNS)


def resolve_load_format(model_path: str | Path | None, load_format: str) -> tuple[str, str | None]:
    """The load format to use and, when it was inferred, the sentence that tells the user why.

    A folder with a ``config.json`` and no weight files is benchmarked with random weights.
    """
    if model_path is None or load_format != "auto":
        return load_format, None
    path = Path(model_path)
    if path.is_dir() and (path / "config.json").is_file() and not has_weights(path):
        return "dummy", f"{path} holds no weights; benchmarking random weights (--load-format dummy)."
    return load_format, None


def model_vocab_size(pipe) -> int:
    """The token ids every part of the loaded engine accepts: the model's and tokenizer's vocab."""
    return min(pipe.engine.loop.vocab_size, pipe.tokenizer.vocab_size)


def load_pipeline(model_path: str | None, engine_config, backend: str | None = None):
    """A :class:`~lmforge.pipeline.Pipeline` for ``model_path`` on engine ``backend`` (by
    default, the one ``engine_config``'s class belongs to)."""
    from ..pipeline import pipeline

    return pipeline(model_path, backend_config=engine_config, log_level="WARNING",
                    backend=backend)
