"""Dispatch strategies of the request distributor: which live node gets the next request.

Each strategy is a pure function of the candidate nodes' status, so it is unit-testable without
HTTP. Speeds are what the user declared for a node (requests it handles per second); a node
without one counts as the average of the declared speeds, or 1 when none was declared.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from statistics import fmean

from .status import NodeStatus

Strategy = Callable[[Mapping[str, NodeStatus]], str]


def _speeds(nodes: Mapping[str, NodeStatus]) -> dict[str, float]:
    declared = [s.speed for s in nodes.values() if s.speed]
    default = fmean(declared) if declared else 1.0
    return {url: s.speed or default for url, s in nodes.items()}


def _argmin(costs: Mapping[str, float]) -> str:
    # Ties are broken at random so equal nodes share the load instead of the first one taking it.
    best = min(costs.values())
    return random.choice([url for url, cost in costs.items() if cost == best])


def pick_random(nodes: Mapping[str, NodeStatus]) -> str:
    """A node drawn at random with probability proportional to its speed."""
    speeds = _speeds(nodes)
    return random.choices(list(speeds), weights=list(speeds.values()))[0]


def pick_min_expected_latency(nodes: Mapping[str, NodeStatus]) -> str:
    """The node that would finish the request first: its unfinished requests plus this one,
    divided by its speed."""
    speeds = _speeds(nodes)
    return _argmin({url: (s.unfinished + 1) / speeds[url] for url, s in nodes.items()})


def pick_min_observed_latency(nodes: Mapping[str, NodeStatus]) -> str:
    """The node with the lowest moving average of recent request latencies. Nodes that have not
    served a request yet count as zero, so each is tried before the averages decide."""
    return _argmin({url: fmean(s.latency) if s.latency else 0.0 for url, s in nodes.items()})


STRATEGIES: dict[str, Strategy] = {
    "random": pick_random,
    "min_expected_latency": pick_min_expected_latency,
    "min_observed_latency": pick_min_observed_latency,
}
