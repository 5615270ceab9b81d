"""What the model-loading commands share: where the model comes from and how loading looks.

A Hub id is downloaded first, with huggingface_hub's progress bars, so that they never mix with
the spinner that then shows while the weights load.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .console import err_console

TRUST_REMOTE_CODE_NOTE = (
    "--trust-remote-code is not needed: lmforge runs its own implementation of every "
    "architecture it supports, never code from the model's repository."
)


@dataclass(frozen=True)
class ModelSource:
    """A model the user named: the local path to load and the name to show and serve it under."""

    path: str | None  # None: the bundled demo model
    name: str | None  # None: the engine's choice (the folder or file name)

    @property
    def display_name(self) -> str:
        from ..demo import DEMO_NAME

        return self.name or (self.path.rstrip("/").rsplit("/", 1)[-1] if self.path else DEMO_NAME)


def model_source(model_path: str | None, model_name: str | None, engine_config: object,
                 trust_remote_code: bool = False) -> ModelSource:
    """Resolve ``model_path`` (a Hub id is downloaded or taken from the cache) to a local path.

    A Hub model is served under its id unless ``--model-name`` says otherwise.
    """
    if trust_remote_code:
        err_console.print(TRUST_REMOTE_CODE_NOTE, style="dim", markup=False, soft_wrap=True)
    if model_path is None:
        return ModelSource(None, model_name)
    from pathlib import Path

    from ..model.hub import resolve_model_path

    local = resolve_model_path(model_path, getattr(engine_config, "revision", None),
                               getattr(engine_config, "download_dir", None))
    from_hub = local != Path(model_path).expanduser()
    return ModelSource(str(local), model_name or (model_path if from_hub else None))


@contextmanager
def loading(source: ModelSource) -> Iterator[None]:
    """A spinner on standard error while the model loads, then how long it took; nothing when
    standard error is not a terminal (logs and pipes stay clean)."""
    name = source.display_name
    started = time.perf_counter()
    if not err_console.is_terminal:
        yield
        return
    with err_console.status(f"Loading {name}...", spinner="dots"):
        yield
    err_console.print(f"[dim]Loaded {name} in {time.perf_counter() - started:.1f} s.[/]",
                      highlight=False)
