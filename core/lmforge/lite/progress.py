"""Progress of a layer-by-layer run: a bar over the layers, the current step, a line per layer."""

from __future__ import annotations

import time

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ..cli.console import err_console


class LayerProgress:
    """``with LayerProgress("AWQ", layers) as p: p.step("searching"); p.layer_done(i, "...")``.

    Writes to stderr, so a command's stdout keeps only its result.
    """

    def __init__(self, title: str, total: int) -> None:
        self.title = title
        self.total = total
        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True,
        )
        self._task = self._progress.add_task(title, total=total)
        self._layer_start = time.perf_counter()

    def __enter__(self) -> LayerProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def step(self, text: str) -> None:
        """Show what the current layer is doing."""
        self._progress.update(self._task, description=f"{self.title}: {text}")

    def note(self, text: str) -> None:
        """A line above the bar."""
        self._progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def layer_done(self, index: int, summary: str = "") -> None:
        """Advance the bar and print the layer's line with its time."""
        seconds = time.perf_counter() - self._layer_start
        self.note(f"layer {index + 1}/{self.total} ({seconds:.1f} s){': ' if summary else ''}{summary}")
        self._progress.advance(self._task)
        self._layer_start = time.perf_counter()
