"""Run the OpenAI-compatible server: build the engine, then serve it with uvicorn."""

from __future__ import annotations

import logging
import os
from typing import Any

from ..errors import ConfigError
from ..tools import get_format
from .app import create_app
from .banner import startup_banner
from .port import check_port_free
from .security import DEFAULT_MAX_BODY_MB, exposure_warning
from .warmup import warm_up

logger = logging.getLogger(__name__)

LOG_LEVELS = ("CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "NOTSET")


def _ssl_files(ssl: bool) -> dict[str, str]:
    if not ssl:
        return {}
    keyfile, certfile = os.environ.get("SSL_KEYFILE"), os.environ.get("SSL_CERTFILE")
    if not keyfile or not certfile:
        raise ConfigError(
            "--ssl needs the environment variables SSL_KEYFILE and SSL_CERTFILE set to the "
            "server's key and certificate files."
        )
    return {"ssl_keyfile": keyfile, "ssl_certfile": certfile}


def _uvicorn_level(log_level: str) -> str:
    level = log_level.upper()
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"Invalid value for --log-level: {log_level!r}; use one of {', '.join(LOG_LEVELS)}."
        )
    return {"FATAL": "critical", "WARN": "warning", "NOTSET": "trace"}.get(level, level.lower())


def _check_body_limit(max_body_mb: float) -> None:
    if not max_body_mb > 0:
        raise ConfigError(f"--max-body-mb must be a positive number of MiB, not {max_body_mb:g}.")


def serve_engine(
    engine: Any,
    server_name: str = "0.0.0.0",
    server_port: int = 23333,
    api_keys: list[str] | None = None,
    ssl: bool = False,
    log_level: str = "ERROR",
    allow_origins: list[str] | None = None,
    allow_credentials: bool = False,
    allow_methods: list[str] | None = None,
    allow_headers: list[str] | None = None,
    max_body_mb: float = DEFAULT_MAX_BODY_MB,
    public_metrics: bool = False,
    public_docs: bool = False,
    special_tokens_in_messages: bool = False,
) -> None:
    """Serve an already built engine until interrupted, then close it. Before it says it is
    ready, a few short requests go through the whole server (see :mod:`.warmup`).

    The security settings are :func:`create_app`'s; ``special_tokens_in_messages`` lets message
    contents spell the model's control tokens (see :class:`AsyncEngine`).
    """
    import uvicorn

    level = _uvicorn_level(log_level)
    ssl_files = _ssl_files(ssl)
    _check_body_limit(max_body_mb)
    logging.basicConfig(level=log_level.upper())
    if special_tokens_in_messages:
        engine.special_tokens_in_messages = True
    app = create_app(
        engine,
        api_keys=api_keys,
        allow_origins=allow_origins,
        allow_credentials=allow_credentials,
        allow_methods=allow_methods,
        allow_headers=allow_headers,
        max_body_mb=max_body_mb,
        public_metrics=public_metrics,
        public_docs=public_docs,
    )
    scheme = "https" if ssl_files else "http"
    try:
        logger.info("warmed up in %.0f ms", warm_up(app) * 1e3)
        print(startup_banner(engine.model_name, scheme, server_name, server_port), flush=True)
        warning = exposure_warning(server_name, api_keys)
        if warning:
            print(warning, flush=True)
        uvicorn.run(app, host=server_name, port=server_port, log_level=level, **ssl_files)
    finally:
        engine.close()


def run_api_server(
    model_path: str | None = None,
    backend: str = "pytorch",
    backend_config: Any = None,
    chat_template_config: Any = None,
    model_name: str | None = None,
    engine_process: bool = False,
    tool_call_parser: str | None = None,
    **server_kwargs: Any,
) -> None:
    """Load a model (the bundled demo model when ``model_path`` is None) and serve it, its engine
    in a process of its own with ``engine_process`` (else in a thread).

    ``tool_call_parser`` names the tool call format (``hermes``, ``llama3``, ``mistral``,
    ``internlm2``) instead of the chat template's own. ``server_kwargs`` are
    :func:`serve_engine`'s: ``server_name``, ``server_port``, ``api_keys``, ``ssl``,
    ``log_level``, the CORS and the security settings.
    """
    from ..engine.builder import build_async_engine

    _ssl_files(server_kwargs.get("ssl", False))  # fail before the slow model load
    _uvicorn_level(server_kwargs.get("log_level", "ERROR"))
    _check_body_limit(server_kwargs.get("max_body_mb", DEFAULT_MAX_BODY_MB))
    check_port_free(server_kwargs.get("server_name", "0.0.0.0"),
                    server_kwargs.get("server_port", 23333))
    tool_format = get_format(tool_call_parser) if tool_call_parser else None
    engine = build_async_engine(
        model_path,
        backend=backend,
        backend_config=backend_config,
        chat_template_config=chat_template_config,
        model_name=model_name,
        engine_process=engine_process,
        serving=True,
    )
    if tool_format is not None:
        engine.chat_template = engine.chat_template.replace(tool_parser=tool_format.name)
    serve_engine(engine, **server_kwargs)
