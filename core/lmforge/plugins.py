"""Plugin discovery and loading.

Plugins come from the ``lmforge`` entry-point group. Loading is tolerant and idempotent: a plugin
whose import or registration raises is recorded with its error (``lmforge plugins`` and
``lmforge check_env`` show it) and everything else keeps working; loading twice does nothing new,
so worker processes can load plugins too.

``LMFORGE_LOAD_PLUGINS`` limits which plugins load: a comma-separated list of entry-point or
distribution names (an empty value loads none). lmforge's own built-ins always load.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from . import hookspecs

logger = logging.getLogger(__name__)

GROUP = "lmforge"
ALLOW_ENV = "LMFORGE_LOAD_PLUGINS"
BUILTIN = "builtin"


@dataclass
class PluginInfo:
    """What ``lmforge plugins`` reports about one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    status: str  # "loaded", "failed" or "disabled"
    error: str = ""


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_infos: dict[str, PluginInfo] = {}


def _allowed() -> set[str] | None:
    value = os.environ.get(ALLOW_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _describe(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "", ""
    return dist.metadata["Name"] or "", dist.version or ""


def _load_entry_point(pm: pluggy.PluginManager, ep: EntryPoint, allowed: set[str] | None) -> None:
    dist_name, version = _describe(ep)
    info = PluginInfo(ep.name, dist_name, version, ep.value, "loaded")
    _infos[ep.name] = info
    if ep.name != BUILTIN and allowed is not None and not ({ep.name, dist_name} & allowed):
        info.status = "disabled"
        return
    try:
        module = ep.load()
        pm.register(module, name=ep.name)
    except Exception as exc:  # a broken plugin must not take lmforge down
        info.status, info.error = "failed", f"{type(exc).__name__}: {exc}"
        logger.warning("plugin %r failed to load: %s", ep.name, info.error)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every allowed installed plugin loaded once."""
    global _pm
    with _lock:
        if _pm is not None:
            return _pm
        pm = pluggy.PluginManager("lmforge")
        pm.add_hookspecs(hookspecs)
        allowed = _allowed()
        seen: set[str] = set()
        for ep in entry_points(group=GROUP):
            if ep.name in seen:  # the same distribution found twice on sys.path
                continue
            seen.add(ep.name)
            _load_entry_point(pm, ep, allowed)
        if BUILTIN not in _infos:  # running from a source tree without an install
            pm.register(importlib.import_module("lmforge.builtin"), name=BUILTIN)
            _infos[BUILTIN] = PluginInfo(BUILTIN, "lmforge", "", "lmforge.builtin", "loaded")
        pm.check_pending()
        _pm = pm
        return pm


def register_plugin(plugin: Any, name: str) -> None:
    """Register an in-process plugin object (tests and embedding applications use this)."""
    pm = get_plugin_manager()
    with _lock:
        if pm.has_plugin(name):
            return
        pm.register(plugin, name=name)
        _infos[name] = PluginInfo(name, "", "", getattr(plugin, "__name__", repr(plugin)), "loaded")


def unregister_plugin(name: str) -> None:
    pm = get_plugin_manager()
    with _lock:
        if pm.has_plugin(name):
            pm.unregister(name=name)
        _infos.pop(name, None)


def reset() -> None:
    """Forget every loaded plugin; the next call discovers them again."""
    global _pm
    with _lock:
        _pm = None
        _infos.clear()


def plugin_infos() -> list[PluginInfo]:
    get_plugin_manager()
    return sorted(_infos.values(), key=lambda i: (i.name != BUILTIN, i.name))


def call_hook(hook_name: str, **kwargs: Any) -> list[Any]:
    """Call every implementation of a hook; one that raises is reported, not propagated."""
    pm = get_plugin_manager()
    hook = getattr(pm.hook, hook_name)
    results = []
    for impl in reversed(hook.get_hookimpls()):  # pluggy's order: last registered runs first
        args = {name: kwargs[name] for name in impl.argnames}
        try:
            result = impl.function(**args)
        except Exception as exc:
            name = pm.get_name(impl.plugin) or repr(impl.plugin)
            info = _infos.get(name)
            error = f"{hook_name}: {type(exc).__name__}: {exc}"
            if info is not None:
                info.status, info.error = "failed", error
            logger.warning("plugin %r failed in %s", name, error)
            continue
        if result is not None:
            results.append(result)
    return results
