"""What plugins register, as plain data, and the lookups that the rest of lmforge uses.

Each collection is gathered by calling the matching ``register_*`` hook once per plugin set
(registering or removing a plugin gathers it again); lookups raise :class:`PluginError` with one
sentence that says which names exist.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import PluginError


def load_object(ref: str | Any) -> Any:
    """Resolve a lazy ``"package.module:Attribute"`` reference; objects pass through."""
    if not isinstance(ref, str):
        return ref
    module_name, _, attr = ref.partition(":")
    obj = importlib.import_module(module_name)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class EngineCapabilities:
    """What an engine can do. The core checks a configuration and a model against this before
    any weight is loaded, and refuses what is outside it with one sentence naming the engine,
    the setting and the installed engines that have it.

    ``architectures``: the HF ``architectures`` names the engine runs itself (a model plugin can
    add more through :attr:`ModelSpec.engines`). ``devices``: ``"cuda"``, ``"cpu"``.
    ``tp``: tensor-parallel sizes. ``kv_quant_policies``: ``quant_policy`` values (0 = no K/V
    quantization, 8 = int8, 4 = int4). ``weight_formats``: checkpoint files it reads
    (``safetensors``, ``bin``, ``gguf``, ``dummy``). ``quant_methods``: quantized checkpoints it
    runs (``awq``, ``w8a8``). ``model_formats``: values of LMDeploy's ``model_format`` it takes.
    """

    architectures: tuple[str, ...] = ()
    devices: tuple[str, ...] = ("cuda",)
    dtypes: tuple[str, ...] = ("float16", "bfloat16", "float32")
    tp: tuple[int, ...] = (1,)
    kv_quant_policies: tuple[int, ...] = (0,)
    weight_formats: tuple[str, ...] = ("safetensors", "bin", "gguf", "dummy")
    quant_methods: tuple[str, ...] = ()
    model_formats: tuple[str, ...] = ("hf",)
    eviction_types: tuple[str, ...] = ("recompute",)
    adapters: bool = False
    logn_attn: bool = False


@dataclass(frozen=True)
class EngineSpec:
    """An inference engine.

    ``runner`` is a lazy ``"module:Class"`` reference to the model runner class and
    ``config_class`` to its configuration dataclass (both imported only when the engine is
    built, so listing engines never touches a GPU). ``is_supported(model_info, engine_config)``,
    when given, returns ``(ok, reason)`` for what :class:`EngineCapabilities` cannot say.
    """

    name: str
    runner: str | type
    config_class: str | type
    capabilities: EngineCapabilities = EngineCapabilities()
    description: str = ""
    is_supported: Callable[[Any, Any], tuple[bool, str]] | None = None
    plugin: str = ""

    def runs_architecture(self, architecture: str) -> bool:
        """Whether this engine runs ``architecture``, by itself or through a model plugin."""
        if architecture in self.capabilities.architectures:
            return True
        spec = models().get(architecture)
        return spec is not None and self.name in spec.engines


@dataclass(frozen=True)
class ModelSpec:
    """A model architecture: an HF ``architectures`` name mapped onto the canonical decoder.

    ``adapter`` is a lazy reference to a :class:`lmforge.model.adapter.ModelAdapter` subclass.
    ``engines`` names engines that run it although they do not list it among their own
    architectures (a model plugin that brings an engine the pieces it needs). ``decoders`` maps
    an engine's name to what that engine needs beyond the canonical config to run the
    architecture, as a lazy ``"module:NAME"`` reference; each engine documents what it takes
    (the ``pytorch`` engine: a ``lmforge_torch_triton.models.pieces.DecoderPieces``).
    """

    architecture: str
    adapter: str | type
    engines: tuple[str, ...] = ()
    description: str = ""
    plugin: str = ""
    decoders: Mapping[str, str | Any] = field(default_factory=dict)


@dataclass(frozen=True)
class QuantizerSpec:
    """A quantization method: its ``lite`` sub-command, what it writes and which engines read it.

    ``cli`` is a lazy ``"module:function"`` reference to the typer command function that
    ``lmforge lite <command>`` runs; it is imported only when that sub-command runs or shows its
    help. ``description`` is the sub-command's one-line summary in ``lmforge lite --help``.
    """

    name: str
    command: str
    format: str
    engines: tuple[str, ...] = ()
    description: str = ""
    plugin: str = ""
    cli: str | Callable[..., Any] | None = None


_cache: dict[str, tuple[int, dict[str, Any]]] = {}


def _collect(hook_name: str, key: Callable[[Any], str]) -> dict[str, Any]:
    from .plugins import call_hook, generation, get_plugin_manager

    get_plugin_manager()  # discovery first: it changes the generation
    current = generation()
    cached = _cache.get(hook_name)
    if cached is not None and cached[0] == current:
        return dict(cached[1])
    found: dict[str, Any] = {}

    def register(item: Any) -> None:
        found[key(item)] = item

    call_hook(hook_name, register=register)
    found = dict(sorted(found.items()))
    _cache[hook_name] = (current, found)
    return dict(found)


def engines() -> dict[str, EngineSpec]:
    return _collect("register_engines", lambda s: s.name)


def models() -> dict[str, ModelSpec]:
    return _collect("register_models", lambda s: s.architecture)


def quantizers() -> dict[str, QuantizerSpec]:
    return _collect("register_quantizers", lambda s: s.name)


def chat_templates() -> dict[str, Any]:
    """Templates that plugins register (see :mod:`lmforge.chat_template` for user-defined ones)."""
    return _collect("register_chat_templates", lambda t: t.name)


def get_engine(name: str) -> EngineSpec:
    found = engines()
    if name not in found:
        have = ", ".join(found) or "none"
        raise PluginError(f"Engine {name!r} is not installed; installed engines: {have}.")
    return found[name]


def engines_for(architecture: str) -> list[str]:
    """The installed engines that run ``architecture``."""
    return [name for name, spec in engines().items() if spec.runs_architecture(architecture)]

