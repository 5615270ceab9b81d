"""Async plumbing between the engine's output generators and HTTP responses.

Closing matters here: every path that stops reading an engine generator (client disconnect,
error, cancellation) closes it, which aborts the request in the engine and frees its KV blocks.
The closes run shielded, because Starlette cancels a streaming response's task when its client
goes away and an unshielded ``await`` in a cancelled scope would be cancelled again at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import anyio
from starlette.requests import Request

from .errors import ClientDisconnected

T = TypeVar("T")

_DONE = object()


async def close_quietly(agen: AsyncIterator) -> None:
    """Close an async generator even from inside a cancelled scope."""
    aclose = getattr(agen, "aclose", None)
    if aclose is None:
        return
    with anyio.CancelScope(shield=True):
        try:
            await aclose()
        except Exception:  # it is being abandoned; its own error is of no further use
            pass


async def _chain(first: list[T], agen: AsyncIterator[T]) -> AsyncIterator[T]:
    try:
        for item in first:
            yield item
        async for item in agen:
            yield item
    finally:
        await close_quietly(agen)


async def primed(agen: AsyncIterator[T]) -> AsyncIterator[T]:
    """Wait for the first item, so that invalid input raises here, before a response starts.

    Returns a generator that yields that item and then the rest.
    """
    try:
        first = [await agen.__anext__()]
    except StopAsyncIteration:
        first = []
    except BaseException:
        await close_quietly(agen)
        raise
    return _chain(first, agen)


async def merge(gens: list[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """Interleave several generators as their items arrive, tagging each with its source index."""
    if len(gens) == 1:
        try:
            async for item in gens[0]:
                yield 0, item
        finally:
            await close_quietly(gens[0])
        return

    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, agen: AsyncIterator[T]) -> None:
        try:
            async for item in agen:
                queue.put_nowait((index, item))
        except Exception as exc:
            queue.put_nowait((index, exc))
        finally:
            await close_quietly(agen)
            queue.put_nowait((index, _DONE))

    tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(gens)]
    try:
        remaining = len(tasks)
        while remaining:
            index, item = await queue.get()
            if item is _DONE:
                remaining -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*tasks, return_exceptions=True)


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work`` for a non-streaming response; cancel it if the client disconnects first.

    Cancelling it closes the engine generators it reads, which aborts their requests; the caller
    then gets :class:`ClientDisconnected`, an ordinary end for a request, not an error to log.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait({task})  # let it close its engine generators
    if task.cancelled():
        raise ClientDisconnected
    return task.result()
