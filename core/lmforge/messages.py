"""Configuration and result types of the public API, with LMDeploy's field names."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .errors import ConfigError
from .structured.grammar import Grammar, grammar_from_response_format


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"Invalid value for {name}: {msg}")


def _check_kv_size(config: Any) -> None:
    """``max_kv_tokens`` and ``kv_cache_memory``: valid, and not both."""
    from .engine.cache_sizing import parse_memory

    tokens, memory = config.max_kv_tokens, config.kv_cache_memory
    _check(tokens is None or (isinstance(tokens, int) and tokens >= 1), "max_kv_tokens",
           f"{tokens!r}; must be a whole number of tokens >= 1")
    if memory is not None:
        parse_memory(memory)
    _check(tokens is None or memory is None, "max_kv_tokens",
           "give either max_kv_tokens or kv_cache_memory, not both")


@dataclass
class GenerationConfig:
    """Sampling and stopping parameters of one request.

    As in LMDeploy, ``top_k`` defaults to 1, which is greedy decoding: set ``top_k=0`` (no
    limit) or a larger value to sample. ``temperature=0`` is greedy too.

    ``response_format`` constrains the reply (LMDeploy's field, OpenAI's shapes):
    ``{"type": "json_object"}``, ``{"type": "json_schema", "json_schema": {"name": ...,
    "schema": {...}}}``, ``{"type": "regex_schema", "regex_schema": "..."}`` or
    ``{"type": "grammar", "grammar": "..."}`` (Lark or GBNF), or a
    :class:`~lmforge.structured.Grammar`; see :mod:`lmforge.structured`.
    """

    n: int = 1
    max_new_tokens: int = 512
    top_p: float = 1.0
    top_k: int = 1
    min_p: float = 0.0
    temperature: float = 0.8
    repetition_penalty: float = 1.0
    # OpenAI's penalties: subtracted from a token's logit once it appears in the output
    # (presence) and once per appearance (frequency).
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    ignore_eos: bool = False
    random_seed: int | None = None
    stop_words: list[str] | None = None
    bad_words: list[str] | None = None
    stop_token_ids: list[int] | None = None
    bad_token_ids: list[int] | None = None
    min_new_tokens: int | None = None
    skip_special_tokens: bool = True
    logprobs: int | None = None
    include_stop_str_in_output: bool = False
    response_format: dict[str, Any] | Grammar | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        _check(isinstance(self.n, int) and self.n >= 1, "n", f"{self.n!r}; must be an integer >= 1")
        _check(
            isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 0,
            "max_new_tokens",
            f"{self.max_new_tokens!r}; must be an integer >= 0",
        )
        _check(0.0 < self.top_p <= 1.0, "top_p", f"{self.top_p!r}; must be in (0, 1]")
        _check(
            isinstance(self.top_k, int) and self.top_k >= 0,
            "top_k",
            f"{self.top_k!r}; must be an integer >= 0 (0 disables it)",
        )
        _check(0.0 <= self.min_p <= 1.0, "min_p", f"{self.min_p!r}; must be in [0, 1]")
        _check(self.temperature >= 0.0, "temperature", f"{self.temperature!r}; must be >= 0")
        _check(
            self.repetition_penalty > 0.0,
            "repetition_penalty",
            f"{self.repetition_penalty!r}; must be > 0",
        )
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _check(isinstance(value, int | float) and -2.0 <= value <= 2.0, name,
                   f"{value!r}; must be in [-2, 2]")
        if self.min_new_tokens is not None:
            _check(
                isinstance(self.min_new_tokens, int) and self.min_new_tokens >= 0,
                "min_new_tokens",
                f"{self.min_new_tokens!r}; must be an integer >= 0",
            )
        if self.logprobs is not None:
            _check(
                isinstance(self.logprobs, int) and 0 <= self.logprobs <= 20,
                "logprobs",
                f"{self.logprobs!r}; must be an integer in [0, 20]",
            )
        for name in ("stop_words", "bad_words"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, [value])
            elif value is not None:
                _check(
                    all(isinstance(w, str) and w for w in value),
                    name,
                    "must be a list of non-empty strings",
                )

        grammar_from_response_format(self.response_format)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


@dataclass
class PytorchEngineConfig:
    """Configuration of the ``pytorch`` engine (LMDeploy's field names)."""

    model_name: str = ""
    tp: int = 1
    session_len: int | None = None
    # None: chosen for the device when the engine starts (engine/settings.py)
    max_batch_size: int | None = None
    cache_max_entry_count: float = 0.8
    # The K/V pool as an amount of memory ("16GiB") or a token count; either replaces
    # cache_max_entry_count.
    kv_cache_memory: str | None = None
    max_kv_tokens: int | None = None
    eviction_type: str = "recompute"
    prefill_interval: int = 16
    block_size: int = 64
    num_cpu_blocks: int = 0
    num_gpu_blocks: int = 0
    adapters: dict[str, str] | None = None
    max_prefill_token_num: int = 4096
    enable_prefix_caching: bool = False
    download_dir: str | None = None
    revision: str | None = None
    quant_policy: int = 0
    rope_scaling_factor: float = 0.0
    dtype: str = "auto"
    device: str = "auto"
    eager_mode: bool = False
    load_format: Literal["auto", "dummy"] = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.tp >= 1, "tp", f"{self.tp!r}; must be >= 1")
        _check(
            self.session_len is None or self.session_len > 0,
            "session_len",
            f"{self.session_len!r}; must be > 0",
        )
        _check(self.max_batch_size is None or self.max_batch_size >= 1, "max_batch_size", f"{self.max_batch_size!r}; must be >= 1")
        _check(
            0.0 < self.cache_max_entry_count <= 1.0 or self.cache_max_entry_count > 1,
            "cache_max_entry_count",
            f"{self.cache_max_entry_count!r}; must be a fraction in (0, 1] or a block count",
        )
        _check(
            self.block_size >= 1 and self.block_size & (self.block_size - 1) == 0,
            "block_size",
            f"{self.block_size!r}; must be a power of two",
        )
        _check(
            self.max_prefill_token_num >= 1,
            "max_prefill_token_num",
            f"{self.max_prefill_token_num!r}; must be >= 1",
        )
        _check(self.quant_policy in (0, 4, 8), "quant_policy", f"{self.quant_policy!r}; must be 0, 4 or 8")
        _check_kv_size(self)
        _check(
            self.eviction_type in ("recompute", "copy"),
            "eviction_type",
            f"{self.eviction_type!r}; must be 'recompute' or 'copy'",
        )
        _check(
            self.dtype in ("auto", "float16", "bfloat16", "float32"),
            "dtype",
            f"{self.dtype!r}; must be auto, float16, bfloat16 or float32",
        )
        _check(self.load_format in ("auto", "dummy"), "load_format", f"{self.load_format!r}; must be auto or dummy")

    @property
    def cache_block_seq_len(self) -> int:
        return self.block_size


@dataclass
class TurbomindEngineConfig:
    """Configuration of the ``turbomind`` engine (LMDeploy's field names)."""

    model_name: str | None = None
    model_format: str | None = None
    tp: int = 1
    session_len: int | None = None
    # None: chosen for the device when the engine starts (engine/settings.py)
    max_batch_size: int | None = None
    cache_max_entry_count: float = 0.8
    # The K/V pool as an amount of memory ("16GiB") or a token count; either replaces
    # cache_max_entry_count.
    kv_cache_memory: str | None = None
    max_kv_tokens: int | None = None
    cache_block_seq_len: int = 64
    enable_prefix_caching: bool = False
    quant_policy: int = 0
    rope_scaling_factor: float = 0.0
    use_logn_attn: bool = False
    download_dir: str | None = None
    revision: str | None = None
    max_prefill_token_num: int = 8192
    num_tokens_per_iter: int = 0
    max_prefill_iters: int = 1
    dtype: str = "auto"
    device: str = "auto"
    load_format: Literal["auto", "dummy"] = "auto"
    seed: int = 0
    # Run decode steps without CUDA graphs (debugging, profiling).
    eager_mode: bool = False

    def __post_init__(self) -> None:
        _check(self.quant_policy in (0, 4, 8), "quant_policy", f"{self.quant_policy!r}; must be 0, 4 or 8")
        _check_kv_size(self)


@dataclass
class Response:
    """The result of one request (or one of its ``n`` choices)."""

    text: str
    generate_token_len: int
    input_token_len: int
    finish_reason: Literal["stop", "length", "abort", "error"] | None = None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, float]] | None = None
    session_id: int | None = None
    index: int = 0

    def __repr__(self) -> str:  # short enough to read in a REPL
        return (
            f"Response(text={self.text!r}, generate_token_len={self.generate_token_len}, "
            f"input_token_len={self.input_token_len}, finish_reason={self.finish_reason!r}, "
            f"index={self.index})"
        )


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict, naming an unknown field in the error."""
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"Unknown field {key!r} for {cls.__name__}; known fields: {', '.join(sorted(known))}.")
    return cls(**data)
