"""Benchmark results: percentiles, the summary table and the JSON file."""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..version import __version__

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``values`` with linear interpolation (NumPy's default); NaN
    when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean and p50/p90/p99 of ``values``, keyed ``mean``, ``p50``, ..."""
    mean = sum(values) / len(values) if values else math.nan
    return {"mean": mean, **{f"p{q}": percentile(values, q) for q in PERCENTILES}}


def device_name() -> str:
    """The accelerator that ran the engine, e.g. ``NVIDIA H200``, or the CPU's architecture."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({platform.machine()})"


@dataclass
class BenchReport:
    """One benchmark run: what ran, on what, with which settings, and its rows of figures.

    ``rows`` are flat dicts of numbers (one per batch size, or a single one), in the order the
    table shows them; ``columns`` maps a row key to the column title.
    """

    benchmark: str
    model: str
    device: str
    settings: dict[str, Any]
    columns: dict[str, str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    version: str = __version__

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: str | Path) -> None:
        """Write the report as JSON (NaN becomes null), creating the folder if needed."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_no_nan(self.to_json()), indent=2) + "\n")

    def table(self):
        """A rich table of the rows, titled with the benchmark, model and device."""
        from rich.table import Table

        table = Table(title=f"{self.benchmark}: {self.model} on {self.device}")
        for title in self.columns.values():
            table.add_column(title, justify="right")
        for row in self.rows:
            table.add_row(*(_format(row.get(key)) for key in self.columns))
        return table


def _format(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _no_nan(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nan(v) for v in value]
    return value
