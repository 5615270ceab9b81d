"""The request distributor's node table: membership, health checks, load and latency tracking."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import httpx

from ...errors import ConfigError, LmforgeError
from .status import NodeStatus
from .strategies import STRATEGIES

logger = logging.getLogger(__name__)


class NoNodeError(LmforgeError):
    """No live node can serve a request; ``status_code`` and ``code`` say why, for HTTP."""

    def __init__(self, message: str, status_code: int, code: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code


def normalize_url(url: str) -> str:
    """``url`` without a trailing slash, checked to be an http(s) base URL."""
    url = str(url).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"Invalid node url {url!r}: it must look like http://host:port.")
    return url


async def fetch_models(client: httpx.AsyncClient, url: str, timeout: float) -> list[str]:
    """The model names a node's ``/v1/models`` lists."""
    resp = await client.get(f"{url}/v1/models", timeout=timeout)
    resp.raise_for_status()
    return [m["id"] for m in resp.json()["data"]]


class NodeManager:
    """Knows every node, which are alive, and picks one per request with the chosen strategy.

    Health checks poll each node's ``/health`` every ``health_interval`` seconds: a node that
    fails is marked dead and gets no requests; a dead node that answers again is revived (its
    model list refreshed). A node whose connection fails during a request is marked dead at once.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        strategy: str = "min_expected_latency",
        health_interval: float = 5.0,
        health_timeout: float = 3.0,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError(
                f"Invalid value for strategy: {strategy!r}; choose one of {', '.join(STRATEGIES)}."
            )
        self.client = client
        self.strategy = strategy
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.nodes: dict[str, NodeStatus] = {}
        self._pick = STRATEGIES[strategy]

    async def add(self, url: str, status: NodeStatus | None = None) -> NodeStatus:
        """Add (or replace) a node. Without declared models, they are read from the node."""
        url = normalize_url(url)
        status = status or NodeStatus()
        if not status.models:
            try:
                status.models = await fetch_models(self.client, url, self.health_timeout)
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                raise ConfigError(
                    f"Cannot read the models of node {url} ({exc.__class__.__name__}): start its "
                    "api_server first, or declare them in status.models."
                ) from exc
        self.nodes[url] = status
        logger.info("node %s added, serving %s", url, ", ".join(status.models))
        return status

    def remove(self, url: str) -> None:
        """Forget a node; requests already sent to it run to their end."""
        url = normalize_url(url)
        if self.nodes.pop(url, None) is None:
            raise ConfigError(f"Unknown node {url}: /nodes/status lists the nodes.")
        logger.info("node %s removed", url)

    def models(self) -> list[str]:
        """Names of the models that at least one live node serves, in first-seen order."""
        seen: dict[str, None] = {}
        for status in self.nodes.values():
            if status.alive:
                seen.update(dict.fromkeys(status.models))
        return list(seen)

    def pick(self, model: str, exclude: Iterable[str] = ()) -> str:
        """A live node serving ``model`` chosen by the strategy, skipping ``exclude``."""
        serving = {url: s for url, s in self.nodes.items() if model in s.models}
        if not serving:
            raise NoNodeError(
                f"The model {model!r} does not exist: /v1/models lists the served models.",
                404,
                "model_not_found",
            )
        skip = set(exclude)
        live = {url: s for url, s in serving.items() if s.alive and url not in skip}
        if not live:
            raise NoNodeError(
                f"No live node serves the model {model!r} now: start or add one.",
                503,
                "no_live_node",
            )
        return self._pick(live)

    def mark_dead(self, url: str) -> None:
        """Stop routing to a node until a health check sees it answer again."""
        status = self.nodes.get(url)
        if status is not None and status.alive:
            status.alive = False
            logger.warning("node %s marked dead", url)

    @asynccontextmanager
    async def track(self, url: str) -> AsyncIterator[None]:
        """Count a request as unfinished on ``url`` while it runs; record its latency if it
        completes."""
        status = self.nodes.get(url) or NodeStatus()
        status.unfinished += 1
        start = time.perf_counter()
        try:
            yield
            status.latency.append(time.perf_counter() - start)
        finally:
            status.unfinished -= 1

    async def check_node(self, url: str) -> None:
        """Probe one node's ``/health`` and update whether it is alive."""
        try:
            resp = await self.client.get(f"{url}/health", timeout=self.health_timeout)
            healthy = resp.status_code == 200
        except httpx.HTTPError:
            healthy = False
        status = self.nodes.get(url)
        if status is None:  # removed while being probed
            return
        if not healthy:
            self.mark_dead(url)
        elif not status.alive:
            try:
                status.models = await fetch_models(self.client, url, self.health_timeout)
            except (httpx.HTTPError, ValueError, KeyError):
                return
            status.alive = True
            logger.info("node %s is alive again", url)

    async def check_health(self) -> None:
        """Probe every node once, concurrently."""
        await asyncio.gather(*(self.check_node(url) for url in list(self.nodes)))

    async def run_health_checks(self) -> None:
        """Probe every node each ``health_interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(self.health_interval)
            await self.check_health()
