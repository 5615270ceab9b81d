"""Logs each Triton kernel specialization compiled after the engine's warm-up.

A request that needs a specialization the warm-up did not compile waits for the compiler (up to
seconds) and every request in its step waits with it. Once the engine is warm, every compile is
logged at INFO with its kernel, signature and time, so such a stall can be traced to the step
shape that caused it and added to the warm-up. A compile that Triton's on-disk cache answers is
logged too (it is short: the kernel is only loaded).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

_started = threading.local()
compiles_after_warm_up = 0


def _before(**kwargs: Any) -> bool:
    _started.at = time.perf_counter()
    return False  # compile as usual


def _after(**kwargs: Any) -> bool:
    global compiles_after_warm_up
    compiles_after_warm_up += 1
    elapsed = time.perf_counter() - getattr(_started, "at", time.perf_counter())
    logger.info("Triton specialized a kernel after warm-up in %.0f ms: %s", elapsed * 1e3,
                kwargs.get("repr", "?"))
    return False


def watch_compiles() -> bool:
    """Install the hooks (once per process); False when this Triton has no compile hooks or
    another hook is installed already (it is left alone)."""
    try:
        from triton import knobs
    except ImportError:
        return False
    runtime = knobs.runtime
    if runtime.jit_post_compile_hook is _after:
        return True
    if runtime.jit_cache_hook is not None or runtime.jit_post_compile_hook is not None:
        return False
    runtime.jit_cache_hook = _before
    runtime.jit_post_compile_hook = _after
    return True
