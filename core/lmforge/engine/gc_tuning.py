"""The garbage collector's settings for a long-running server or engine process.

Two costs measured with the API server at 256 to 1,024 streams (scripts/profile_serve_host.py):
full collections scanned the ~250,000 objects alive since start-up (the model's and the
tokenizer's Python objects, the app), 180 ms each with the interpreter held; and the objects of
the requests in flight (coroutines, closures, outputs: ~250 per stream) made full collections
frequent and 40 to 150 ms long, about a quarter of the API process's time at 1,024 streams.
"""

from __future__ import annotations

import gc

# A full collection after this many collections of the middle generation (CPython's default: 10).
# Garbage with reference cycles lives longer between full collections; everything else is freed
# by reference counting as before.
FULL_COLLECTION_EVERY = 100


def settle_after_start_up() -> None:
    """Call once start-up is done: what is alive now lives as long as the process, so the
    collector stops scanning it (``gc.freeze``), and full collections become rarer."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
