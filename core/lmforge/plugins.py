"""Plugin discovery and loading.

Plugins come from the ``lmforge`` entry-point group. Loading is tolerant and idempotent: a plugin
whose import, registration or hook validation raises is recorded with its error (``lmforge
plugins`` and ``lmforge check_env`` show it) and everything else keeps working; loading twice does
nothing new, so worker processes can load plugins too.

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
from .errors import PluginError

logger = logging.getLogger(__name__)

GROUP = "lmforge"
ALLOW_ENV = "LMFORGE_LOAD_PLUGINS"
BUILTIN = "builtin"

LOADED, FAILED, DISABLED = "loaded", "failed", "disabled"


@dataclass
class PluginInfo:
    """What ``lmforge plugins`` reports about one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    status: str  # LOADED, FAILED or DISABLED
    error: str = ""

    def add_error(self, error: str) -> None:
        """Mark the plugin failed, keeping every distinct error it met."""
        self.status = FAILED
        if error not in self.error.split("; "):
            self.error = f"{self.error}; {error}" if self.error else error


_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_infos: dict[str, PluginInfo] = {}
# Bumped whenever the set of registered plugins changes; the registry caches what the hooks
# returned per generation.
_generation = 0


def generation() -> int:
    """A number that changes whenever a plugin is registered or removed."""
    return _generation


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


def _format_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _register_checked(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    """Register ``plugin`` and validate its hooks; on any error leave ``pm`` as it was."""
    global _generation
    _generation += 1
    pm.register(plugin, name=name)
    try:
        # Every plugin registered before this one passed the check, so a failure here is this
        # plugin's own (typically a misspelt hook name).
        pm.check_pending()
    except Exception:
        pm.unregister(name=name)
        raise


def _load_entry_point(pm: pluggy.PluginManager, ep: EntryPoint, allowed: set[str] | None) -> None:
    dist_name, version = _describe(ep)
    info = PluginInfo(ep.name, dist_name, version, ep.value, LOADED)
    _infos[ep.name] = info
    if ep.name != BUILTIN and allowed is not None and not ({ep.name, dist_name} & allowed):
        info.status = DISABLED
        return
    try:
        plugin = ep.load()
        if pm.is_registered(plugin):  # one module exposed under two entry-point names
            raise PluginError(f"module {ep.value!r} is already registered as {pm.get_name(plugin)!r}")
        _register_checked(pm, plugin, ep.name)
    except Exception as exc:  # a broken plugin must not take lmforge down
        info.add_error(_format_error(exc))
        logger.warning("plugin %r failed to load: %s (see `lmforge plugins`)", ep.name, info.error)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every allowed installed plugin loaded once."""
    global _pm
    with _lock:
        if _pm is not None:
            return _pm
        pm = pluggy.PluginManager(GROUP)
        pm.add_hookspecs(hookspecs)
        # Published before any plugin is imported: a plugin that looks something up while it is
        # imported gets this manager with the plugins loaded so far, instead of starting a
        # second discovery whose result this one would then overwrite.
        _pm = pm
        allowed = _allowed()
        for ep in entry_points(group=GROUP):
            if ep.name in _infos:
                # The same distribution found twice on sys.path, or two distributions claiming
                # one name: the first on sys.path wins, as it does for imports.
                if _describe(ep)[0] != _infos[ep.name].distribution:
                    logger.warning("plugin name %r is used by two distributions; using %r",
                                   ep.name, _infos[ep.name].distribution)
                continue
            _load_entry_point(pm, ep, allowed)
        if BUILTIN not in _infos:  # running from a source tree without an install
            _register_checked(pm, importlib.import_module("lmforge.builtin"), BUILTIN)
            _infos[BUILTIN] = PluginInfo(BUILTIN, "lmforge", "", "lmforge.builtin", LOADED)
        return pm


def register_plugin(plugin: Any, name: str) -> None:
    """Register an in-process plugin object (tests and embedding applications use this).

    Registering a name that is already registered does nothing. A plugin whose hooks do not
    match the specs raises :class:`PluginError`.
    """
    pm = get_plugin_manager()
    with _lock:
        if pm.has_plugin(name) or pm.is_registered(plugin):
            return
        try:
            _register_checked(pm, plugin, name)
        except Exception as exc:
            raise PluginError(f"Plugin {name!r} cannot be registered: {exc}") from exc
        module = getattr(plugin, "__name__", type(plugin).__qualname__)
        _infos[name] = PluginInfo(name, "", "", module, LOADED)


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered under ``name``; unknown names are ignored."""
    global _generation
    pm = get_plugin_manager()
    with _lock:
        if pm.has_plugin(name):
            pm.unregister(name=name)
            _generation += 1
        _infos.pop(name, None)


def reset() -> None:
    """Forget every loaded plugin; the next call discovers them again."""
    global _pm, _generation
    with _lock:
        _pm = None
        _infos.clear()
        _generation += 1


def plugin_infos() -> list[PluginInfo]:
    """Every discovered plugin, built-ins first, with its load status and error."""
    get_plugin_manager()
    with _lock:
        return sorted(_infos.values(), key=lambda i: (i.name != BUILTIN, i.name))


def call_hook(hook_name: str, **kwargs: Any) -> list[Any]:
    """Call every implementation of a hook and return their non-``None`` results.

    Implementations run in pluggy's order (``tryfirst``/``trylast`` respected). One that raises
    is recorded against its plugin and skipped; the others still run. For a ``firstresult``
    hook the first non-``None`` result ends the call.
    """
    pm = get_plugin_manager()
    hook = getattr(pm.hook, hook_name)
    first_only = bool(hook.spec and hook.spec.opts.get("firstresult"))
    results = []
    for impl in reversed(hook.get_hookimpls()):  # pluggy keeps them in reverse call order
        if impl.hookwrapper or impl.wrapper:
            continue
        args = {name: kwargs[name] for name in impl.argnames}
        try:
            result = impl.function(**args)
        except Exception as exc:
            name = pm.get_name(impl.plugin) or repr(impl.plugin)
            error = f"{hook_name}: {_format_error(exc)}"
            with _lock:
                if name in _infos:
                    _infos[name].add_error(error)
            logger.warning("plugin %r failed in %s", name, error)
            continue
        if result is not None:
            results.append(result)
            if first_only:
                break
    return results
