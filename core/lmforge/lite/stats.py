"""Per-channel statistics of every linear's input, and the calibration files that keep them.

``lmforge lite calibrate`` writes ``calibration.json`` (how the statistics were made) and
``calibration.pt`` (``{"absmax": {name: [K]}, "absmean": {name: [K]}}``, float32, keyed by
canonical linear names such as ``layers.0.attn.q``). A quantizer given a work dir that holds a
calibration of the same model and settings reuses it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import ConfigError
from .decoder import LayerWeights, Projector, dense_projector
from .groups import INPUT_OF

META_FILE = "calibration.json"
STATS_FILE = "calibration.pt"
CALIBRATION_FILES = (META_FILE, STATS_FILE)


@dataclass
class ChannelStats:
    """Running per-channel absolute max and mean of one input over every calibration token.

    With ``sample_every`` set it also keeps every ``sample_every``-th token's input row (at most
    ``sample_limit`` of them), evenly spread over the calibration text, for searches that need
    the activations themselves (AWQ's clipping search).
    """

    absmax: torch.Tensor | None = None
    abssum: torch.Tensor | None = None
    count: int = 0
    sample_every: int = 0
    sample_limit: int = 0
    rows: list[torch.Tensor] = field(default_factory=list)

    def update(self, x: torch.Tensor) -> None:
        flat = x.reshape(-1, x.shape[-1])
        if self.sample_every:
            kept = sum(r.shape[0] for r in self.rows)
            start = (-self.count) % self.sample_every
            rows = flat[start::self.sample_every][: max(self.sample_limit - kept, 0)]
            if rows.shape[0]:
                self.rows.append(rows.clone())
        flat = flat.abs().float()
        absmax, abssum = flat.amax(dim=0), flat.sum(dim=0, dtype=torch.float64)
        if self.absmax is None:
            self.absmax, self.abssum = absmax, abssum
        else:
            self.absmax = torch.maximum(self.absmax, absmax)
            self.abssum += abssum
        self.count += flat.shape[0]

    @property
    def absmean(self) -> torch.Tensor:
        return (self.abssum / max(self.count, 1)).float()

    @property
    def sample(self) -> torch.Tensor:
        """The kept input rows, ``[rows, K]``."""
        return torch.cat(self.rows)


def recording_projector(
    layer: LayerWeights, stats: dict[str, ChannelStats],
    new_stats: Callable[[], ChannelStats] = ChannelStats,
) -> Projector:
    """The float projector that also adds each distinct linear input to ``stats[group]``
    (created with ``new_stats()`` on first sight)."""
    dense = dense_projector(layer)
    first_of_group = {}
    for linear, group in INPUT_OF.items():
        first_of_group.setdefault(group, linear)

    def proj(name: str, x: torch.Tensor) -> torch.Tensor:
        group = INPUT_OF[name]
        if first_of_group[group] == name:  # q, k and v read one tensor: count it once
            if group not in stats:
                stats[group] = new_stats()
            stats[group].update(x)
        return dense(name, x)

    return proj


@dataclass
class CalibrationMeta:
    """How a calibration was made; a quantizer reuses it only when all of this matches."""

    model: str
    dataset: str
    samples: int
    seqlen: int
    seed: int = 0
    tokens: int = 0
    device: str = ""
    dtype: str = ""
    linears: list[str] = field(default_factory=list)

    def same_run(self, other: CalibrationMeta) -> bool:
        keys = ("model", "dataset", "samples", "seqlen", "seed")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


@dataclass
class Calibration:
    """Input statistics of every linear: ``absmax[name]`` and ``absmean[name]``, ``[K]`` float32."""

    meta: CalibrationMeta
    absmax: dict[str, torch.Tensor]
    absmean: dict[str, torch.Tensor]

    def add_layer(self, index: int, stats: dict[str, ChannelStats]) -> None:
        """Record one layer's group statistics under each linear's canonical name."""
        for linear, group in INPUT_OF.items():
            if group in stats:
                name = f"layers.{index}.{linear}"
                self.absmax[name] = stats[group].absmax.cpu()
                self.absmean[name] = stats[group].absmean.cpu()
                self.meta.linears.append(name)

    def save(self, folder: Path) -> None:
        """Write the two calibration files into ``folder`` (each replaced whole)."""
        _replace(folder / STATS_FILE, lambda p: torch.save(
            {"absmax": self.absmax, "absmean": self.absmean}, p))
        _replace(folder / META_FILE, lambda p: p.write_text(json.dumps(asdict(self.meta), indent=2)))

    @classmethod
    def load(cls, folder: Path) -> Calibration:
        try:
            meta = CalibrationMeta(**json.loads((folder / META_FILE).read_text()))
            data = torch.load(folder / STATS_FILE, map_location="cpu", weights_only=True)
            return cls(meta, dict(data["absmax"]), dict(data["absmean"]))
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
            raise ConfigError(
                f"The calibration in {folder} cannot be read ({exc}); run `lmforge lite "
                "calibrate` again or pass a new --work-dir."
            ) from None


def _replace(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    tmp.replace(path)
