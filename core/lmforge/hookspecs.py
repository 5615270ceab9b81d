"""Hook specifications: the contract between lmforge and its plugins.

A plugin is a module (or object) with functions decorated by ``lmforge.hookimpl`` and named after
the specs below, exposed through the ``lmforge`` entry-point group::

    [project.entry-points.lmforge]
    my_plugin = "my_package.plugin"

Hooks are callback style: lmforge passes a ``register`` function and the plugin calls it once per
thing it provides. An implementation may accept fewer arguments than its spec.
docs/plugins.md lists every hook with its exact signature; a test keeps the two in step.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("lmforge")
hookimpl = pluggy.HookimplMarker("lmforge")


# ---------------------------------------------------------------------------------------------
# Engines and models
# ---------------------------------------------------------------------------------------------


@hookspec
def register_engines(register):
    """Register inference engines.

    :param register: call ``register(spec)`` with an :class:`lmforge.registry.EngineSpec` for each
        engine (name, config class, lazy ``"module:Class"`` runner factory, support check).
    """


@hookspec
def register_models(register):
    """Register model architecture adapters.

    :param register: call ``register(spec)`` with an :class:`lmforge.registry.ModelSpec` for each
        HF ``architectures`` name the plugin maps onto lmforge's canonical decoder.
    """


@hookspec
def register_quantizers(register):
    """Register quantization methods.

    :param register: call ``register(spec)`` with an :class:`lmforge.registry.QuantizerSpec`
        (name, ``lite`` sub-command, on-disk format, engines that read it).
    """


# ---------------------------------------------------------------------------------------------
# Chat templates
# ---------------------------------------------------------------------------------------------


@hookspec
def register_chat_templates(register):
    """Register chat templates.

    :param register: call ``register(template)`` with a
        :class:`lmforge.chat_template.ChatTemplate` instance for each template. Its ``name`` is
        what ``--chat-template``/``ChatTemplateConfig(model_name=...)`` select and what
        ``lmforge list`` prints, and its ``match(model_files)`` method says whether it fits a
        model, from the model's own files.
    """


# ---------------------------------------------------------------------------------------------
# CLI and server
# ---------------------------------------------------------------------------------------------


@hookspec
def register_commands(app):
    """Add commands to the ``lmforge`` command line.

    :param app: the root :class:`typer.Typer`; call ``app.command()`` or ``app.add_typer()``.
        Called each time the CLI is built; import heavy libraries inside the commands, not
        here, so that ``lmforge --help`` stays fast.
    """


@hookspec
def register_env_info(register):
    """Add a section to ``lmforge check_env`` (a native library's build, a driver's state).

    :param register: call ``register(title, info)`` with a section title and a dict of
        ``{field: value}`` strings; keep it fast and never raise for a missing piece (report it).
    """


@hookspec
def register_routes(app):
    """Add HTTP routes or middleware to the OpenAI-compatible server.

    :param app: the :class:`fastapi.FastAPI` application, before it starts serving.
    """


@hookspec
def process_request(endpoint, request):
    """Inspect or change a request before the server runs it (auth, quotas, logging).

    :param endpoint: the route path, for example ``"/v1/chat/completions"``.
    :param request: the parsed request model; it may be changed in place.
    :return: ``None`` to go on, or an error message string to reject the request with HTTP 400.
        Every implementation runs; the server rejects the request if any returns a message.
    """
