"""Command-line options shared by the commands that load a model (``serve api_server``, ``chat``).

Each option is a typer ``Annotated`` type; a command declares ``tp: options.Tp = 1`` and passes
the values to :func:`build_engine_config`. Defaults are LMDeploy's.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from ..errors import ConfigError

ENGINE_PANEL = "Engine"


class BackendName(str, Enum):
    pytorch = "pytorch"
    turbomind = "turbomind"


class ModelFormatName(str, Enum):
    hf = "hf"
    llama = "llama"
    awq = "awq"


class DtypeName(str, Enum):
    auto = "auto"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float32 = "float32"


class DeviceName(str, Enum):
    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


class LoadFormatName(str, Enum):
    auto = "auto"
    dummy = "dummy"


ModelPath = Annotated[
    str | None,
    typer.Argument(
        help="An HF model folder or a GGUF file; without it, the bundled demo model "
        "(SmolLM2-135M-Instruct).",
        show_default=False,
    ),
]
Backend = Annotated[BackendName, typer.Option("--backend", help="The inference engine.")]
ModelName = Annotated[
    str | None,
    typer.Option("--model-name", help="The name the model is served and reported under."),
]
ChatTemplate = Annotated[
    str | None,
    typer.Option(
        "--chat-template",
        help="A JSON file or JSON string with a chat template configuration.",
    ),
]
Tp = Annotated[
    int,
    typer.Option(
        "--tp", min=1, help="GPUs used for tensor parallelism.", rich_help_panel=ENGINE_PANEL
    ),
]
SessionLen = Annotated[
    int | None,
    typer.Option(
        "--session-len",
        min=1,
        help="Maximum tokens of one sequence (prompt and output); default: the model's.",
        rich_help_panel=ENGINE_PANEL,
    ),
]
MaxBatchSize = Annotated[
    int,
    typer.Option(
        "--max-batch-size", min=1, help="Maximum batch size.", rich_help_panel=ENGINE_PANEL
    ),
]
CacheMaxEntryCount = Annotated[
    float,
    typer.Option(
        "--cache-max-entry-count",
        help="Fraction of free device memory for the KV cache (a number above 1 is a block count).",
        rich_help_panel=ENGINE_PANEL,
    ),
]
CacheBlockSeqLen = Annotated[
    int,
    typer.Option(
        "--cache-block-seq-len",
        help="Tokens per KV cache block (a power of two).",
        rich_help_panel=ENGINE_PANEL,
    ),
]
EnablePrefixCaching = Annotated[
    bool,
    typer.Option(
        "--enable-prefix-caching",
        help="Reuse the KV cache of shared prompt prefixes.",
        rich_help_panel=ENGINE_PANEL,
    ),
]
MaxPrefillTokenNum = Annotated[
    int,
    typer.Option(
        "--max-prefill-token-num",
        min=1,
        help="Most prompt tokens prefilled in one step (longer prompts are chunked).",
        rich_help_panel=ENGINE_PANEL,
    ),
]
QuantPolicy = Annotated[
    int,
    typer.Option(
        "--quant-policy",
        help="KV cache quantization: 0 none, 4 or 8 bits.",
        rich_help_panel=ENGINE_PANEL,
    ),
]
ModelFormat = Annotated[
    ModelFormatName | None,
    typer.Option(
        "--model-format",
        help="Format of the model's weights (turbomind engine).",
        rich_help_panel=ENGINE_PANEL,
    ),
]
RopeScalingFactor = Annotated[
    float,
    typer.Option(
        "--rope-scaling-factor",
        help="RoPE scaling factor to extend the context (0 keeps the model's).",
        rich_help_panel=ENGINE_PANEL,
    ),
]
Dtype = Annotated[
    DtypeName,
    typer.Option(
        "--dtype",
        help="Data type of weights and activations.",
        rich_help_panel=ENGINE_PANEL,
    ),
]
Device = Annotated[
    DeviceName,
    typer.Option(
        "--device",
        help="Device to run on.",
        rich_help_panel=ENGINE_PANEL,
    ),
]
LoadFormat = Annotated[
    LoadFormatName,
    typer.Option(
        "--load-format",
        help="'dummy' skips reading weights (random values), for testing.",
        rich_help_panel=ENGINE_PANEL,
    ),
]


def build_engine_config(
    backend: str,
    *,
    tp: int = 1,
    session_len: int | None = None,
    max_batch_size: int = 128,
    cache_max_entry_count: float = 0.8,
    cache_block_seq_len: int = 64,
    enable_prefix_caching: bool = False,
    max_prefill_token_num: int = 8192,
    quant_policy: int | str = 0,
    model_format: str | None = None,
    rope_scaling_factor: float = 0.0,
    dtype: str = "auto",
    device: str = "auto",
    load_format: str = "auto",
    model_name: str | None = None,
) -> Any:
    """The engine config for ``backend`` from the command-line engine options.

    Returns a :class:`PytorchEngineConfig` or :class:`TurbomindEngineConfig`; invalid values
    raise :class:`ConfigError` naming the field.
    """
    from ..messages import PytorchEngineConfig, TurbomindEngineConfig

    backend, model_format, dtype, device, load_format = (
        _plain(v) for v in (backend, model_format, dtype, device, load_format)
    )
    shared: dict[str, Any] = dict(
        tp=tp,
        session_len=session_len,
        max_batch_size=max_batch_size,
        cache_max_entry_count=cache_max_entry_count,
        enable_prefix_caching=enable_prefix_caching,
        max_prefill_token_num=max_prefill_token_num,
        quant_policy=int(quant_policy),
        rope_scaling_factor=rope_scaling_factor,
        dtype=dtype,
        device=device,
        load_format=load_format,
    )
    if backend == "turbomind":
        return TurbomindEngineConfig(
            model_name=model_name,
            model_format=model_format,
            cache_block_seq_len=cache_block_seq_len,
            **shared,
        )
    if backend != "pytorch":
        raise ConfigError(f"Invalid value for --backend: {backend!r}; use pytorch or turbomind.")
    if model_format not in (None, "hf"):
        raise ConfigError(
            f"--model-format {model_format} is only read by the turbomind engine; "
            "use --backend turbomind or drop the flag."
        )
    return PytorchEngineConfig(
        model_name=model_name or "", block_size=cache_block_seq_len, **shared
    )


ENGINE_OPTIONS = (
    "tp", "session_len", "max_batch_size", "cache_max_entry_count", "cache_block_seq_len",
    "enable_prefix_caching", "max_prefill_token_num", "quant_policy", "model_format",
    "rope_scaling_factor", "dtype", "device", "load_format", "model_name",
)


def engine_config_from(backend: str, values: dict[str, Any]) -> Any:
    """:func:`build_engine_config` from a command's parameters (pass ``locals()``): the engine
    options every model-loading command declares, picked by name."""
    return build_engine_config(backend, **{k: values[k] for k in ENGINE_OPTIONS if k in values})


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def load_chat_template_config(value: str | None) -> Any:
    """A ``ChatTemplateConfig`` from ``--chat-template`` (a JSON file or a JSON string)."""
    if not value:
        return None
    from ..chat_template.config import ChatTemplateConfig

    return ChatTemplateConfig.from_json(value)
