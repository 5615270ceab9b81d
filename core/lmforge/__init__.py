"""lmforge: compress, run and serve large language models.

The public API is imported lazily so that ``import lmforge`` (and the CLI) stays fast and never
touches a GPU.
"""

from __future__ import annotations

import importlib
from typing import Any

from .hookspecs import hookimpl
from .version import __version__

_LAZY = {
    "pipeline": "lmforge.pipeline:pipeline",
    "Pipeline": "lmforge.pipeline:Pipeline",
    "GenerationConfig": "lmforge.messages:GenerationConfig",
    "PytorchEngineConfig": "lmforge.messages:PytorchEngineConfig",
    "TurbomindEngineConfig": "lmforge.messages:TurbomindEngineConfig",
    "Response": "lmforge.messages:Response",
    "ChatTemplateConfig": "lmforge.chat_template.config:ChatTemplateConfig",
    "serve": "lmforge.serve.api:serve",
    "client": "lmforge.serve.api:client",
}

__all__ = ["__version__", "hookimpl", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lmforge' has no attribute {name!r}")
    module, _, attr = _LAZY[name].partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
