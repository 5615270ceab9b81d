"""``lmforge serve``: the OpenAI-compatible API server and its terminal client.

``lmforge.cli.serve_extra`` adds the ``gradio`` and ``proxy`` commands to :data:`serve_app` when
it is imported; :func:`register` imports it, so every serving command hangs off one group.
"""

from __future__ import annotations

import importlib
import re
from enum import Enum
from typing import Annotated

import typer

from ..tools.formats import ALIASES, FORMATS
from . import options

serve_app = typer.Typer(
    name="serve",
    help="Serve LLMs with an OpenAI-compatible API, a web UI, or a request distributor.",
    no_args_is_help=True,
)

SERVER_PANEL = "Server"
# The formats' names and the aliases LMDeploy and vLLM use for them.
ToolCallParser = Enum("ToolCallParser", {name: name for name in (
    *FORMATS, *ALIASES)}, type=str)
ServerLogLevel = Enum(  # LMDeploy's choices, which include Python's aliases
    "ServerLogLevel",
    {
        name: name
        for name in ("CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO", "DEBUG", "NOTSET")
    },
    type=str,
)


def _split(values: list[str] | None) -> list[str] | None:
    """Values of a repeatable option; one value may also hold several, comma or space separated."""
    if values is None:
        return None
    return [v for value in values for v in re.split(r"[,\s]+", value) if v]


@serve_app.command("api_server")
def api_server(
    model_path: options.ModelPath = None,
    server_name: Annotated[
        str,
        typer.Option(
            "--server-name", help="Host address to listen on.", rich_help_panel=SERVER_PANEL
        ),
    ] = "0.0.0.0",
    server_port: Annotated[
        int, typer.Option("--server-port", help="Port to listen on.", rich_help_panel=SERVER_PANEL)
    ] = 23333,
    allow_origins: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-origins",
            help="Origins allowed by CORS (repeatable).",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = None,
    allow_credentials: Annotated[
        bool,
        typer.Option(
            "--allow-credentials",
            help="Allow credentials in CORS requests.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = False,
    allow_methods: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-methods",
            help="HTTP methods allowed by CORS (repeatable).",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = None,
    allow_headers: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-headers",
            help="HTTP headers allowed by CORS (repeatable).",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = None,
    api_keys: Annotated[
        list[str] | None,
        typer.Option(
            "--api-keys",
            help="API keys clients must send as 'Authorization: Bearer <key>' (repeatable).",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = None,
    ssl: Annotated[
        bool,
        typer.Option(
            "--ssl",
            help="Serve HTTPS with the files named by the SSL_KEYFILE and SSL_CERTFILE variables.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = False,
    log_level: Annotated[
        ServerLogLevel,
        typer.Option(
            "--log-level",
            case_sensitive=False,
            help="Log level of the server.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = ServerLogLevel.ERROR,
    tool_call_parser: Annotated[
        ToolCallParser | None,
        typer.Option(
            "--tool-call-parser",
            case_sensitive=False,
            help="How the model writes tool calls, when its chat template does not say: hermes "
            "(Qwen2.5/3 and ChatML models), llama3 (Llama 3.1+), mistral or internlm2.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = None,
    model_name: options.ModelName = None,
    backend: options.Backend = "pytorch",
    chat_template: options.ChatTemplate = None,
    tp: options.Tp = 1,
    session_len: options.SessionLen = None,
    max_batch_size: options.MaxBatchSize = 128,
    cache_max_entry_count: options.CacheMaxEntryCount = 0.8,
    cache_block_seq_len: options.CacheBlockSeqLen = 64,
    enable_prefix_caching: options.EnablePrefixCaching = False,
    max_prefill_token_num: options.MaxPrefillTokenNum = 8192,
    quant_policy: options.QuantPolicy = 0,
    model_format: options.ModelFormat = None,
    rope_scaling_factor: options.RopeScalingFactor = 0.0,
    dtype: options.Dtype = options.DtypeName.auto,
    device: options.Device = options.DeviceName.auto,
    load_format: options.LoadFormat = options.LoadFormatName.auto,
) -> None:
    """Serve a model with an OpenAI-compatible REST API (FastAPI + uvicorn).

    Structured output (response_format) and tool calling (tools, tool_choice) are enforced with
    grammar-constrained decoding.
    """
    from ..serve.server import run_api_server

    backend_config = options.engine_config_from(backend, locals())
    run_api_server(
        model_path,
        backend=backend,
        backend_config=backend_config,
        chat_template_config=options.load_chat_template_config(chat_template),
        model_name=model_name,
        tool_call_parser=tool_call_parser.value if tool_call_parser else None,
        server_name=server_name,
        server_port=server_port,
        api_keys=_split(api_keys),
        ssl=ssl,
        log_level=log_level.value,
        allow_origins=_split(allow_origins) or ["*"],
        allow_credentials=allow_credentials,
        allow_methods=_split(allow_methods),
        allow_headers=_split(allow_headers),
    )


@serve_app.command("api_client")
def api_client(
    api_server_url: Annotated[
        str, typer.Argument(help="The server's URL, e.g. http://127.0.0.1:23333.")
    ],
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="The API key, if the server needs one.")
    ] = None,
    session_id: Annotated[
        int, typer.Option("--session-id", help="Id of the chat session on the server.")
    ] = 1,
) -> None:
    """Chat in the terminal with a running api_server (reads piped standard input too)."""
    from ..serve.terminal_client import run_api_client

    run_api_client(api_server_url, api_key=api_key, session_id=session_id)


def register(app: typer.Typer) -> None:
    """Add ``lmforge serve`` and its commands to the root application."""
    try:
        importlib.import_module("lmforge.cli.serve_extra")
    except ModuleNotFoundError as exc:
        if exc.name != "lmforge.cli.serve_extra":
            raise
    app.add_typer(serve_app, name="serve")
