"""Dispatch strategies and node bookkeeping of the request distributor, without HTTP."""

from __future__ import annotations

import random
from collections import Counter

import httpx
import pytest
from lmforge.errors import ConfigError
from lmforge.serve.proxy import NodeManager, NodeStatus, NoNodeError
from lmforge.serve.proxy.strategies import (
    pick_min_expected_latency,
    pick_min_observed_latency,
    pick_random,
)


def draw(strategy, nodes, n=4000) -> Counter:
    random.seed(0)
    return Counter(strategy(nodes) for _ in range(n))


def test_random_is_weighted_by_speed():
    counts = draw(pick_random, {"a": NodeStatus(speed=3), "b": NodeStatus(speed=1)})
    assert counts["a"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_random_gives_undeclared_speed_the_average():
    nodes = {"a": NodeStatus(speed=4), "b": NodeStatus(speed=2), "c": NodeStatus()}
    counts = draw(pick_random, nodes, n=6000)
    # Speeds 4, 2 and (4 + 2) / 2 = 3 out of 9.
    assert counts["c"] / 6000 == pytest.approx(3 / 9, abs=0.03)
    assert counts["a"] / 6000 == pytest.approx(4 / 9, abs=0.03)


def test_min_expected_latency_weighs_queue_by_speed():
    nodes = {"a": NodeStatus(unfinished=3, speed=2), "b": NodeStatus(unfinished=1, speed=1)}
    # a: (3 + 1) / 2 = 2.0, b: (1 + 1) / 1 = 2.0 -> tie; one more on a tips it to b.
    assert set(draw(pick_min_expected_latency, nodes, n=200)) == {"a", "b"}
    nodes["a"].unfinished = 4
    assert pick_min_expected_latency(nodes) == "b"
    # Idle nodes: the faster one finishes first.
    idle = {"a": NodeStatus(speed=1), "b": NodeStatus(speed=5)}
    assert pick_min_expected_latency(idle) == "b"


def test_min_expected_latency_balances_equal_nodes():
    nodes = {"a": NodeStatus(), "b": NodeStatus(), "c": NodeStatus()}
    for _ in range(9):  # requests that stay unfinished
        nodes[pick_min_expected_latency(nodes)].unfinished += 1
    assert [s.unfinished for s in nodes.values()] == [3, 3, 3]


def test_min_observed_latency_tries_new_nodes_then_the_fastest():
    nodes = {"a": NodeStatus(), "b": NodeStatus()}
    nodes["a"].latency.extend([0.5, 0.7])
    assert pick_min_observed_latency(nodes) == "b"  # never measured
    nodes["b"].latency.extend([0.1, 2.0])  # mean 1.05 > 0.6
    assert pick_min_observed_latency(nodes) == "a"


def test_status_from_dict_checks_fields():
    status = NodeStatus.from_dict({"models": ["m"], "speed": 2.5, "unfinished": 7})
    assert status.models == ["m"] and status.speed == 2.5 and status.unfinished == 0
    with pytest.raises(ConfigError, match="status.speed"):
        NodeStatus.from_dict({"speed": -1})
    with pytest.raises(ConfigError, match="status.models"):
        NodeStatus.from_dict({"models": "m"})


async def test_manager_routes_by_model_and_liveness():
    async with httpx.AsyncClient() as client:
        manager = NodeManager(client, strategy="random")
        await manager.add("http://127.0.0.1:1/", NodeStatus(models=["m"]))
        await manager.add("http://127.0.0.1:2", NodeStatus(models=["m", "n"]))
        assert manager.models() == ["m", "n"]
        assert manager.pick("n") == "http://127.0.0.1:2"
        assert manager.pick("m", exclude=["http://127.0.0.1:2"]) == "http://127.0.0.1:1"
        with pytest.raises(NoNodeError, match="does not exist") as missing:
            manager.pick("other")
        assert missing.value.status_code == 404
        manager.mark_dead("http://127.0.0.1:2")
        assert manager.models() == ["m"]
        with pytest.raises(NoNodeError, match="No live node") as dead:
            manager.pick("n")
        assert dead.value.status_code == 503
        # Nothing listens on these ports: the health check keeps both dead.
        await manager.check_health()
        assert not any(s.alive for s in manager.nodes.values())
        manager.remove("http://127.0.0.1:1")
        with pytest.raises(ConfigError, match="Unknown node"):
            manager.remove("http://127.0.0.1:1")


async def test_manager_rejects_bad_input():
    async with httpx.AsyncClient() as client:
        with pytest.raises(ConfigError, match="strategy"):
            NodeManager(client, strategy="fastest")
        manager = NodeManager(client)
        with pytest.raises(ConfigError, match="http://host:port"):
            await manager.add("127.0.0.1:23333")
        with pytest.raises(ConfigError, match="start its api_server"):
            await manager.add("http://127.0.0.1:1")
