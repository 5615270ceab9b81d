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
    max_batch_size: int = 128
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
