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


class QuantPolicyName(str, Enum):
    none = "0"
    int4 = "4"
    int8 = "8"


ModelPath = Annotated[
    str | None,
    typer.Argument(
        help="An HF model folder, a GGUF file, or a Hugging Face Hub id (owner/name, downloaded "
        "once); without it, the bundled demo model (SmolLM2-135M-Instruct).",
        show_default=False,
    ),
]
Backend = Annotated[
    str,
    typer.Option(
        "--backend",
        help="The inference engine: pytorch, or another installed one (`lmforge list` shows "
        "them).",
    ),
]
ModelName = Annotated[
    str | None,
    typer.Option("--model-name", "--served-model-name", metavar="NAME",
                 help="The name the model is served and reported under."),
]
ChatTemplate = Annotated[
    str | None,
    typer.Option(
        "--chat-template", metavar="NAME|JSON",
        help="A chat template name (`lmforge list` shows them), or a JSON file or string with "
        "a chat template configuration.",
    ),
]
Revision = Annotated[
    str | None,
    typer.Option("--revision", metavar="REV", help="Branch, tag or commit of a Hub model; "
                 "default: its main branch."),
]
DownloadDir = Annotated[
    str | None,
    typer.Option("--download-dir", metavar="DIR", help="Where Hub models are downloaded and "
                 "looked for; default: the Hugging Face cache (HF_HUB_CACHE)."),
]
TrustRemoteCode = Annotated[
    bool,
    typer.Option("--trust-remote-code", help="Accepted for compatibility; not needed: lmforge "
                 "runs its own implementation of every architecture it supports."),
]
Tp = Annotated[
    int,
    typer.Option(
        "--tp", "--tensor-parallel-size", min=1, metavar="N",
        help="GPUs used for tensor parallelism.", rich_help_panel=ENGINE_PANEL,
    ),
]
SessionLen = Annotated[
    int | None,
    typer.Option(
        "--session-len", "--max-model-len",
        min=1, metavar="N",
        help="Most tokens of one conversation (prompt and replies); default: the model's "
        "context length.",
        rich_help_panel=ENGINE_PANEL,
    ),
]
MaxBatchSize = Annotated[
    int | None,
    typer.Option(
        "--max-batch-size", "--max-num-seqs", min=1, metavar="N", show_default=False,
        help="Most sequences run together in one step; by default 256 on a GPU with 40 GiB or "
        "more (1,024 for api_server on an 80 GB GPU or larger), else 128.",
        rich_help_panel=ENGINE_PANEL,
    ),
]
# lmforge chat runs one conversation: on the CPU its K/V pool then holds one session, not four.
ChatMaxBatchSize = Annotated[
    int,
    typer.Option(
        "--max-batch-size", "--max-num-seqs", min=1, metavar="N",
        help="Most sequences run together in one step.", rich_help_panel=ENGINE_PANEL,
    ),
]
CacheMaxEntryCount = Annotated[
    float,
    typer.Option(
        "--cache-max-entry-count", "--gpu-memory-utilization", metavar="FRACTION",
        help="Fraction of the free device memory that the KV cache takes, after the weights "
        "(a number above 1 is a count of cache blocks).",
        rich_help_panel=ENGINE_PANEL,
    ),
]
KvCacheMemory = Annotated[
    str | None,
    typer.Option(
        "--kv-cache-memory",
        help="The KV cache as an amount of memory, e.g. 16GiB (units: B, KB, MB, GB, TB, KiB, "
        "MiB, GiB, TiB); replaces --cache-max-entry-count.",
        rich_help_panel=ENGINE_PANEL,
        show_default=False,
    ),
]
MaxKvTokens = Annotated[
    int | None,
    typer.Option(
        "--max-kv-tokens",
        min=1,
        help="The KV cache as a number of tokens, e.g. 200000; replaces --cache-max-entry-count.",
        rich_help_panel=ENGINE_PANEL,
        show_default=False,
    ),
]
CacheBlockSeqLen = Annotated[
    int,
    typer.Option(
        "--cache-block-seq-len", metavar="N",
        help="Tokens per KV cache block (a power of two).",
        rich_help_panel=ENGINE_PANEL,
    ),
]
EnablePrefixCaching = Annotated[
    bool,
    typer.Option(
        "--enable-prefix-caching",
        help="Reuse the KV cache of prompt prefixes that requests share.",
        rich_help_panel=ENGINE_PANEL,
    ),
]
MaxPrefillTokenNum = Annotated[
    int,
    typer.Option(
        "--max-prefill-token-num",
        min=1, metavar="N",
        help="Most prompt tokens prefilled in one step (longer prompts are cut into chunks).",
        rich_help_panel=ENGINE_PANEL,
    ),
]
QuantPolicy = Annotated[
    QuantPolicyName,
    typer.Option(
        "--quant-policy", metavar="{0,4,8}",
        help="KV cache quantization: 0 none, 8 int8 (about 1.9x the tokens in the same memory), "
        "4 int4 (about 3.5x).",
        rich_help_panel=ENGINE_PANEL,
    ),
]
ModelFormat = Annotated[
    ModelFormatName | None,
    typer.Option(
        "--model-format",
        help="Format of the model's weights: hf, llama (Meta's layout) or awq.",
        rich_help_panel=ENGINE_PANEL,
    ),
]
RopeScalingFactor = Annotated[
    float,
    typer.Option(
        "--rope-scaling-factor", metavar="X",
        help="RoPE scaling factor that extends the context (0 keeps the model's).",
        rich_help_panel=ENGINE_PANEL,
    ),
]
Dtype = Annotated[
    DtypeName,
    typer.Option(
        "--dtype",
        help="Data type of weights and activations; auto is float32 on the CPU, the "
        "checkpoint's half precision on a GPU.",
        rich_help_panel=ENGINE_PANEL,
    ),
]
Device = Annotated[
    DeviceName,
    typer.Option(
        "--device",
        help="Device to run on; auto is the GPU when there is one.",
        rich_help_panel=ENGINE_PANEL,
    ),
]
LoadFormat = Annotated[
    LoadFormatName,
    typer.Option(
        "--load-format",
        help="dummy skips reading the weights (random values), for testing.",
        rich_help_panel=ENGINE_PANEL,
    ),
]


# The engine options every model-loading command declares, with their command-line defaults.
ENGINE_OPTION_DEFAULTS: dict[str, Any] = {
    "tp": 1, "session_len": None, "max_batch_size": None, "cache_max_entry_count": 0.8,
    "kv_cache_memory": None, "max_kv_tokens": None, "cache_block_seq_len": 64,
    "enable_prefix_caching": False, "max_prefill_token_num": 8192, "quant_policy": 0,
    "model_format": None, "rope_scaling_factor": 0.0, "dtype": "auto", "device": "auto",
    "load_format": "auto", "model_name": None, "revision": None, "download_dir": None,
}
# Options whose config field has another name in some engines' config classes.
_FIELD_NAMES = {"cache_block_seq_len": ("cache_block_seq_len", "block_size")}


def build_engine_config(backend: str, _defaulted: set[str] = frozenset(), **values: Any) -> Any:
    """The configuration of engine ``backend`` (an instance of its registered config class)
    from the command-line engine options.

    An option the engine's config class has no field for is refused when the user gave it
    (``_defaulted`` names those left at the command's default) or, without that knowledge, when
    it differs from :data:`ENGINE_OPTION_DEFAULTS`; invalid values raise :class:`ConfigError`
    naming the field.
    """
    import dataclasses

    from .. import registry

    spec = registry.get_engine(backend)
    config_class = registry.load_object(spec.config_class)
    known = {f.name for f in dataclasses.fields(config_class)}
    kwargs: dict[str, Any] = {}
    for option, value in values.items():
        value = _plain(value)
        if option == "quant_policy" and value is not None:
            value = int(value)  # a choice the command line gives as text
        name = next((n for n in _FIELD_NAMES.get(option, (option,)) if n in known), None)
        if name is not None:
            if value is not None:
                kwargs[name] = value
        elif option not in _defaulted and value != ENGINE_OPTION_DEFAULTS.get(option):
            flag = "--" + option.replace("_", "-")
            raise ConfigError(f"The {backend} engine has no {flag} setting; drop the flag.")
    return config_class(**kwargs)


def engine_config_from(backend: str, values: dict[str, Any]) -> Any:
    """:func:`build_engine_config` from a command's parameters (pass ``locals()``): the engine
    options every model-loading command declares, picked by name. An option left at the
    command's own default counts as not given, so an engine lacking it is not refused."""
    options = {k: values[k] for k in ENGINE_OPTION_DEFAULTS if k in values}
    return build_engine_config(backend, _defaulted=set(_defaulted(options)), **options)


def _defaulted(names) -> list[str]:
    """Which of the running command's parameters ``names`` were not given by the user."""
    from typer._click.core import ParameterSource
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    if ctx is None:
        return []
    return [n for n in names if ctx.get_parameter_source(n) in (ParameterSource.DEFAULT, None)]


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def load_chat_template_config(value: str | None) -> Any:
    """A ``ChatTemplateConfig`` from ``--chat-template``: a template name (as LMDeploy takes
    it), a JSON file or a JSON string. An unknown name is refused now, before the model loads."""
    if not value:
        return None
    from pathlib import Path

    from ..chat_template.config import ChatTemplateConfig

    text = value.strip()
    is_name = not text.startswith("{") and not text.endswith(".json") and "/" not in text
    if is_name and not Path(text).is_file():
        config = ChatTemplateConfig(model_name=text)
    else:
        config = ChatTemplateConfig.from_json(value)
    config.chat_template  # noqa: B018  (builds the template: a typo'd name fails here)
    return config
