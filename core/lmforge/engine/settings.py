"""The settings the shared runtime reads from any engine's configuration.

Each engine has its own configuration class (``EngineSpec.config_class``: LMDeploy's
``PytorchEngineConfig``, ``TurbomindEngineConfig``, or a third party's). The scheduler, the
block manager and the front ends need only a few of their fields; :class:`EngineSettings` reads
them by LMDeploy's names, with LMDeploy's defaults where a class lacks one, so an engine's
config class needs no common base.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Fields that two LMDeploy config classes spell differently: (pytorch name, turbomind name).
ALIASES = (("block_size", "cache_block_seq_len"),)


@dataclass(frozen=True)
class EngineSettings:
    """What the runtime every engine shares reads from an engine config."""

    model_name: str | None = None
    session_len: int | None = None
    # None: default_max_batch_size() of the device, resolved where the engine runs
    max_batch_size: int | None = None
    cache_max_entry_count: float = 0.8
    # The pool as an amount of memory ("16GiB") or a token count (see cache_sizing.py).
    kv_cache_memory: str | None = None
    max_kv_tokens: int | None = None
    block_size: int = 64
    num_gpu_blocks: int = 0
    # The most tokens one step computes (prompt chunks and decodes together); LMDeploy's name.
    max_prefill_token_num: int = 4096
    prefill_interval: int = 16
    enable_prefix_caching: bool = False
    dtype: str = "auto"
    device: str = "auto"
    load_format: str = "auto"
    rope_scaling_factor: float = 0.0
    seed: int = 0
    tp: int = 1
    quant_policy: int = 0

    @classmethod
    def from_config(cls, config: Any) -> EngineSettings:
        values = {}
        for f in dataclasses.fields(cls):
            names = next((pair for pair in ALIASES if f.name in pair), (f.name,))
            for name in names:
                value = getattr(config, name, None)
                if value is not None:
                    values[f.name] = value
                    break
        return cls(**values)


# Measured on an H200 (Llama-3-8B, bf16, 1,000 ShareGPT prompts): through api_server, text
# prompts at once, 38.6 req/s at a batch of 256, 41.9 at 512, 46.5 at 1,024 (one lease; LMDeploy's
# own default on such a GPU is 1,024); offline, all submitted at once, 48.8 req/s at 256 and 44.0
# at 1,024 (another lease). So a server takes the larger batch and offline work the smaller. A
# GPU with less memory holds fewer sequences' K/V anyway, so its batch stays smaller.
HUGE_GPU_BATCH, LARGE_GPU_BATCH, SMALL_BATCH = 1024, 256, 128
# An "80 GB" card reports about 79 GiB, a 48 GB one about 45.
HUGE_GPU_BYTES, LARGE_GPU_BYTES = 70 * 2**30, 40 * 2**30


def device_kind(device: str = "auto") -> str:
    """The kind of device a ``device`` setting names (``cuda:1`` is cuda); ``auto`` is CUDA when
    a GPU is visible, else the CPU."""
    if device != "auto":
        return device.split(":")[0]
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_max_batch_size(device: str = "auto", serving: bool = False) -> int:
    """The batch an engine runs when the user does not choose one: on a CUDA GPU with 40 GiB or
    more 256, and 1,024 for a server on one with 70 GiB or more (80 GB cards and larger); else
    128. Reads the GPU's properties, so it runs where the engine runs (the engine process), not
    in a front end that never touches CUDA."""
    if device_kind(device) != "cuda":
        return SMALL_BATCH
    import torch

    index = torch.device(device).index if ":" in device else torch.cuda.current_device()
    memory = torch.cuda.get_device_properties(index).total_memory
    if serving and memory >= HUGE_GPU_BYTES:
        return HUGE_GPU_BATCH
    return LARGE_GPU_BATCH if memory >= LARGE_GPU_BYTES else SMALL_BATCH


def max_batch_size_of(config: Any, device: str = "auto") -> int:
    """``config.max_batch_size``, or the device's default when it is unset (a runner built
    without the builder, as tests do)."""
    return getattr(config, "max_batch_size", None) or default_max_batch_size(device)


def with_max_batch_size(config: Any, settings: EngineSettings,
                        serving: bool = False) -> tuple[Any, EngineSettings]:
    """``config`` and ``settings`` with ``max_batch_size`` chosen for the device (and for a
    server when ``serving``) when unset."""
    if settings.max_batch_size is not None:
        return config, settings
    batch = default_max_batch_size(settings.device, serving)
    if dataclasses.is_dataclass(config) and any(
            f.name == "max_batch_size" for f in dataclasses.fields(config)):
        config = dataclasses.replace(config, max_batch_size=batch)
    return config, dataclasses.replace(settings, max_batch_size=batch)


def convert_config(config: Any, config_class: type) -> Any:
    """An instance of ``config_class`` with the fields of ``config`` that it shares (by name or
    alias), as LMDeploy does when an engine is given the other engine's configuration."""
    if isinstance(config, config_class):
        return config
    wanted = {f.name for f in dataclasses.fields(config_class)}
    kwargs = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:
            continue
        pair = next((p for p in ALIASES if f.name in p), (f.name,))
        for name in pair:
            if name in wanted:
                kwargs[name] = value
    return config_class(**kwargs)
