"""Outputs handed from the engine's thread to an asyncio event loop, one wake-up per batch.

``loop.call_soon_threadsafe`` per output writes to the loop's wake-up pipe each time: at 256
streams that system call, made by the engine's thread, cost about a fifth of the server's CPU.
An :class:`Inbox` collects what arrives while a wake-up is pending and delivers it all in one
callback, so an engine step that produces outputs for every running request wakes the loop once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class Inbox:
    """Delivers ``(queue, item)`` pairs put from any thread into asyncio queues of one loop,
    in the order they were put.

    No lock: ``deque.append`` and ``popleft`` are atomic, and the flag is cleared before the
    deque is drained, so an item put during a drain is either drained now or finds the flag
    clear and schedules the next delivery (at worst one wake-up too many, never one too few).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pending: deque[tuple[asyncio.Queue, Any]] = deque()
        self._scheduled = False

    def put(self, queue: asyncio.Queue, item: Any) -> None:
        """Queue ``item`` for ``queue``; wakes the loop unless a wake-up is already pending."""
        self._pending.append((queue, item))
        if self._scheduled:
            return
        self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody is left to read the queues
            self._pending.clear()
            self._scheduled = False

    def _deliver(self) -> None:
        self._scheduled = False
        pending = self._pending
        while pending:
            queue, item = pending.popleft()
            queue.put_nowait(item)
