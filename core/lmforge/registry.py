"""What plugins register, as plain data, and the lookups that the rest of lmforge uses.

Each collection is gathered once per plugin-manager state by calling the matching
``register_*`` hook; lookups raise :class:`PluginError` with one sentence that says what to install
or which names exist.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
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
class EngineSpec:
    """An inference engine.

    ``runner`` is a lazy ``"module:Class"`` reference to the model runner class (imported only
    when the engine is built, so listing engines never touches a GPU). ``is_supported(model_info,
    device)`` returns ``(ok, reason)``.
    """

    name: str
    runner: str | type
    config_class: str | type = "lmforge.messages:PytorchEngineConfig"
    description: str = ""
    is_supported: Callable[[Any, str], tuple[bool, str]] | None = None
    plugin: str = ""

    def check(self, model_info: Any, device: str) -> tuple[bool, str]:
        if self.is_supported is None:
            return True, ""
        return self.is_supported(model_info, device)


@dataclass(frozen=True)
class ModelSpec:
    """A model architecture: an HF ``architectures`` name mapped onto the canonical decoder.

    ``adapter`` is a lazy reference to a :class:`lmforge.model.adapter.ModelAdapter` subclass.
    ``engines`` names the engines that implement it.
    """

    architecture: str
    adapter: str | type
    engines: tuple[str, ...] = ("pytorch",)
    description: str = ""
    plugin: str = ""


@dataclass(frozen=True)
class QuantizerSpec:
    """A quantization method: its ``lite`` sub-command, what it writes and which engines read it."""

    name: str
    command: str
    format: str
    engines: tuple[str, ...] = ()
    description: str = ""
    plugin: str = ""


@dataclass
class Registry:
    engines: dict[str, EngineSpec] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    quantizers: dict[str, QuantizerSpec] = field(default_factory=dict)
    chat_templates: dict[str, Any] = field(default_factory=dict)


def _collect(hook_name: str, key: Callable[[Any], str]) -> dict[str, Any]:
    from .plugins import call_hook

    found: dict[str, Any] = {}

    def register(item: Any) -> None:
        found[key(item)] = item

    call_hook(hook_name, register=register)
    return dict(sorted(found.items()))


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
        hint = {"pytorch": "lmforge-torch-triton", "turbomind": "lmforge-turbomind-cuda"}.get(name)
        install = f" Install it with `pip install {hint}`." if hint else ""
        have = ", ".join(found) or "none"
        raise PluginError(f"Engine {name!r} is not installed (installed engines: {have}).{install}")
    return found[name]


def get_model_spec(architecture: str) -> ModelSpec:
    found = models()
    if architecture not in found:
        raise PluginError(
            f"Architecture {architecture!r} is not supported; supported architectures: "
            f"{', '.join(found) or 'none'}."
        )
    return found[architecture]
