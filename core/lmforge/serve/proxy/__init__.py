"""The request distributor: one OpenAI-compatible address in front of several api_server nodes,
with health checks, fail-over and load-aware dispatch (``lmforge serve proxy``)."""

from .app import create_proxy_app
from .nodes import NodeManager, NoNodeError
from .status import NodeStatus
from .strategies import STRATEGIES

__all__ = ["STRATEGIES", "NodeManager", "NoNodeError", "NodeStatus", "create_proxy_app"]
