"""The engine's outputs reach an event loop in order, with one wake-up per batch."""

from __future__ import annotations

import asyncio
import threading

from lmforge.engine.inbox import Inbox


def test_puts_from_another_thread_arrive_in_order_with_one_wake_up_per_batch():
    async def main() -> tuple[list, list, int]:
        loop = asyncio.get_running_loop()
        inbox = Inbox(loop)
        wake_ups = 0
        real = loop.call_soon_threadsafe

        def counting(*args):
            nonlocal wake_ups
            wake_ups += 1
            return real(*args)

        loop.call_soon_threadsafe = counting
        a, b = asyncio.Queue(), asyncio.Queue()
        worker = threading.Thread(target=lambda: [inbox.put(a if i % 2 else b, i)
                                                  for i in range(100)])
        worker.start()  # the loop is not running meanwhile: every put lands in one batch
        worker.join()
        got_a = [await a.get() for _ in range(50)]
        got_b = [await b.get() for _ in range(50)]
        inbox.put(a, "later")  # a new batch, a new wake-up
        assert await a.get() == "later"
        return got_a, got_b, wake_ups

    got_a, got_b, wake_ups = asyncio.run(main())
    assert got_a == list(range(1, 100, 2)) and got_b == list(range(0, 100, 2))
    assert wake_ups == 2


def test_a_put_after_the_loop_closed_is_dropped():
    loop = asyncio.new_event_loop()
    inbox = Inbox(loop)
    loop.close()
    inbox.put(asyncio.Queue(), 1)  # no error for the engine's thread
    inbox.put(asyncio.Queue(), 2)


def test_puts_racing_deliveries_from_two_threads_all_arrive_in_order():
    async def main() -> list:
        inbox = Inbox(asyncio.get_running_loop())
        queues = [asyncio.Queue(), asyncio.Queue()]

        def produce(k: int) -> None:
            for i in range(20000):
                inbox.put(queues[k], i)

        workers = [threading.Thread(target=produce, args=(k,)) for k in (0, 1)]
        for worker in workers:
            worker.start()
        got = [[await q.get() for _ in range(20000)] for q in queues]  # delivers while put
        for worker in workers:
            worker.join()
        return got

    assert asyncio.run(main()) == [list(range(20000))] * 2
