"""How big the paged K/V pool is, in the terms users think in, for any engine.

Four ways to size it, the first that is set wins: ``num_gpu_blocks`` (a block count),
``max_kv_tokens`` (tokens), ``kv_cache_memory`` (an amount of memory such as ``"16GiB"``), and
``cache_max_entry_count`` (LMDeploy's: a fraction of the free memory after the weights load, or a
block count above 1), which the engine's runner resolves. A token count or an amount is checked
before any weight loads, when the engine can estimate its memory
(:meth:`~lmforge.engine.runner.ModelRunner.memory_estimate`): it must hold one whole session and
fit beside the weights, else one sentence says what fits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ConfigError
from .settings import EngineSettings

# Decimal and binary units, as storage and memory are sold and reported.
MEMORY_UNITS = {
    "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
}
_UNIT_NAMES = ", ".join(MEMORY_UNITS)
_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*")


def parse_memory(value: str | int | float, name: str = "kv_cache_memory") -> int:
    """Bytes in ``value``, a number with a unit (``"16GiB"``, ``"800 MB"``); a bare number is
    refused, since 16 may mean bytes or GiB."""
    match = _SIZE.fullmatch(str(value))
    if not match:
        raise ConfigError(f"Invalid value for {name}: {value!r}; give a number and a unit, e.g. "
                          f"16GiB (units: {_UNIT_NAMES}).")
    number, unit = match.groups()
    if not unit:
        raise ConfigError(f"Invalid value for {name}: {value!r} has no unit; write e.g. "
                          f"{number}GiB (units: {_UNIT_NAMES}).")
    factor = next((f for u, f in MEMORY_UNITS.items() if u.lower() == unit.lower()), None)
    if factor is None:
        raise ConfigError(f"Invalid value for {name}: unknown unit {unit!r} in {value!r}; the "
                          f"units are {_UNIT_NAMES}.")
    size = int(float(number) * factor)
    if size <= 0:
        raise ConfigError(f"Invalid value for {name}: {value!r}; must be more than 0 bytes.")
    return size


def gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"


@dataclass(frozen=True)
class MemoryEstimate:
    """What an engine expects to use on its device before it loads anything.

    ``kv_bytes_per_token``: K and V of one token across all layers in the chosen cache layout
    (``quant_policy`` included); ``weight_bytes``: the weights once loaded; ``free_bytes``: the
    device memory free now; ``reserve_bytes``: what the engine keeps for activations and its own
    buffers beyond weights and cache; ``device``: how messages name the device.
    """

    kv_bytes_per_token: int
    weight_bytes: int
    free_bytes: int
    reserve_bytes: int
    device: str


def plan_pool(settings: EngineSettings, session_len: int,
              per_token: int | MemoryEstimate) -> int | None:
    """The block count that ``max_kv_tokens`` (rounded up to whole blocks) or
    ``kv_cache_memory`` (rounded down) asks for, None when neither is set. ``per_token`` is the
    engine's K/V bytes per token, or its whole :class:`MemoryEstimate`, which also checks that
    the pool fits beside the weights. Refuses a pool smaller than one session."""
    block_size, policy = settings.block_size, settings.quant_policy
    estimate = per_token if isinstance(per_token, MemoryEstimate) else None
    bytes_per_token = estimate.kv_bytes_per_token if estimate else per_token
    if settings.max_kv_tokens:
        num_blocks, flag = -(-settings.max_kv_tokens // block_size), "--max-kv-tokens"
    elif settings.kv_cache_memory is not None:
        memory = parse_memory(settings.kv_cache_memory)
        num_blocks, flag = memory // (block_size * bytes_per_token), "--kv-cache-memory"
    else:
        return None
    tokens = num_blocks * block_size
    if tokens < session_len:
        need = -(-session_len // block_size) * block_size
        raise ConfigError(
            f"Invalid value for {flag}: the K/V cache would hold {tokens:,} tokens, less than one "
            f"session of session_len {session_len:,}; give at least {need:,} tokens "
            f"({gib(need * bytes_per_token)} at quant_policy {policy}), or lower --session-len."
        )
    if estimate is not None:
        _check_fits(tokens, flag, block_size, estimate, policy)
    return num_blocks


def _check_fits(tokens: int, flag: str, block_size: int, estimate: MemoryEstimate,
                quant_policy: int) -> None:
    """Refuse a pool that, with the weights and the engine's reserve, exceeds the free memory."""
    cache_bytes = tokens * estimate.kv_bytes_per_token
    others = estimate.weight_bytes + estimate.reserve_bytes
    if cache_bytes + others <= estimate.free_bytes:
        return
    room = max(estimate.free_bytes - others, 0)
    fit = room // (block_size * estimate.kv_bytes_per_token) * block_size
    raise ConfigError(
        f"Invalid value for {flag}: {tokens:,} tokens of K/V cache ({gib(cache_bytes)} at "
        f"quant_policy {quant_policy}), the weights (about {gib(estimate.weight_bytes)}) and "
        f"working memory ({gib(estimate.reserve_bytes)}) need {gib(cache_bytes + others)}, more "
        f"than the {gib(estimate.free_bytes)} free on {estimate.device}; at most {fit:,} tokens "
        f"({gib(fit * estimate.kv_bytes_per_token)}) fit."
    )


def describe_pool(num_blocks: int, block_size: int, block_bytes: int | None,
                  quant_policy: int) -> str:
    """One line for the start-up log: the pool in tokens, blocks and GiB."""
    size = f", {gib(num_blocks * block_bytes)}" if block_bytes else ""
    kind = {0: "unquantized", 8: "int8", 4: "int4"}.get(quant_policy, f"policy {quant_policy}")
    return (f"K/V cache: {num_blocks * block_size:,} tokens in {num_blocks:,} blocks of "
            f"{block_size}{size}, {kind} (quant_policy {quant_policy})")
