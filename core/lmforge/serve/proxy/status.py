"""What the request distributor knows about one api_server node."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError

# Requests whose latency feeds the moving average of min_observed_latency.
LATENCY_WINDOW = 15


@dataclass
class NodeStatus:
    """State of one node: the models it serves, its load and how fast it has been.

    ``speed`` is declared by the user when adding the node (requests per second it can handle);
    ``latency`` holds the seconds the last requests took; ``alive`` is kept by health checks.
    """

    models: list[str] = field(default_factory=list)
    unfinished: int = 0
    latency: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    speed: float | None = None
    alive: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NodeStatus:
        """The status a user sent to ``/nodes/add``; only ``models`` and ``speed`` are taken."""
        models = data.get("models") or []
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ConfigError("Invalid value for status.models: must be a list of model names.")
        speed = data.get("speed")
        if speed is not None and (
            isinstance(speed, bool) or not isinstance(speed, (int, float)) or speed <= 0
        ):
            raise ConfigError(f"Invalid value for status.speed: {speed!r}; must be a number > 0.")
        return cls(models=list(models), speed=speed)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form shown by ``/nodes/status``."""
        return {
            "models": list(self.models),
            "unfinished": self.unfinished,
            "latency": list(self.latency),
            "speed": self.speed,
            "alive": self.alive,
        }
