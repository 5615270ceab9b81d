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

from . import options
from .command import DefaultCommandGroup, LmforgeCommand
from .console import err_console


class ServeGroup(DefaultCommandGroup):
    """``lmforge serve MODEL`` is ``lmforge serve api_server MODEL``, as in vLLM."""

    default_command = "api_server"


serve_app = typer.Typer(
    name="serve",
    help="Serve LLMs with an OpenAI-compatible API, a web UI, or a request distributor.\n\n"
    "`lmforge serve MODEL [OPTIONS]` is short for `lmforge serve api_server MODEL [OPTIONS]`.",
    no_args_is_help=True,
    cls=ServeGroup,
)

SERVER_PANEL = "Server"
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


@serve_app.command("api_server", cls=LmforgeCommand)
def api_server(
    model_path: options.ModelPath = None,
    server_name: Annotated[
        str,
        typer.Option(
            "--server-name", "--host", metavar="HOST", help="Address to listen on.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = "0.0.0.0",
    server_port: Annotated[
        int, typer.Option("--server-port", "--port", metavar="PORT", help="Port to listen on.",
                          rich_help_panel=SERVER_PANEL)
    ] = 23333,
    allow_origins: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-origins", metavar="ORIGIN",
            help="Origins allowed by CORS; without it CORS is off, so web pages on other "
            "origins cannot call the server.",
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
            "--allow-methods", metavar="METHOD",
            help="HTTP methods allowed by CORS.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = None,
    allow_headers: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-headers", metavar="HEADER",
            help="HTTP headers allowed by CORS.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = None,
    api_keys: Annotated[
        list[str] | None,
        typer.Option(
            "--api-keys", "--api-key", metavar="KEY",
            help="API keys; clients send one as 'Authorization: Bearer <key>'.",
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
    max_body_mb: Annotated[
        float,
        typer.Option(
            "--max-body-mb",
            help="Largest request body accepted, in MiB; a larger one gets HTTP 413.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = 4.0,
    public_metrics: Annotated[
        bool,
        typer.Option(
            "--public-metrics",
            help="Serve /metrics without an API key even when --api-keys is set.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = False,
    public_docs: Annotated[
        bool,
        typer.Option(
            "--public-docs",
            help="Serve /docs, /redoc and /openapi.json without an API key even when "
            "--api-keys is set.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = False,
    special_tokens_in_messages: Annotated[
        bool,
        typer.Option(
            "--special-tokens-in-messages",
            help="Let message contents spell the model's control tokens (<|im_end|>...) as "
            "real tokens; off by default, as it lets a user forge turns.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = False,
    engine_process: Annotated[
        bool,
        typer.Option(
            "--engine-process/--engine-thread",
            help="Run the engine in a process of its own (the default), so HTTP, templates and "
            "tokenization never share its Python interpreter, or in a thread of the server's "
            "process.",
            rich_help_panel=options.ENGINE_PANEL,
        ),
    ] = True,
    tool_call_parser: Annotated[
        str | None,
        typer.Option(
            "--tool-call-parser",
            metavar="FORMAT",
            help="How the model writes tool calls, for a chat template that does not say: "
            "hermes (Qwen2.5/3 and other ChatML models; also qwen), llama3 (Llama 3.1+), "
            "mistral or internlm2.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = None,
    model_name: options.ModelName = None,
    backend: options.Backend = "pytorch",
    chat_template: options.ChatTemplate = None,
    revision: options.Revision = None,
    download_dir: options.DownloadDir = None,
    trust_remote_code: options.TrustRemoteCode = False,
    tp: options.Tp = 1,
    session_len: options.SessionLen = None,
    max_batch_size: options.MaxBatchSize = None,
    cache_max_entry_count: options.CacheMaxEntryCount = 0.8,
    kv_cache_memory: options.KvCacheMemory = None,
    max_kv_tokens: options.MaxKvTokens = None,
    cache_block_seq_len: options.CacheBlockSeqLen = 64,
    enable_prefix_caching: options.EnablePrefixCaching = False,
    max_prefill_token_num: options.MaxPrefillTokenNum = 8192,
    quant_policy: options.QuantPolicy = options.QuantPolicyName.none,
    model_format: options.ModelFormat = None,
    rope_scaling_factor: options.RopeScalingFactor = 0.0,
    dtype: options.Dtype = options.DtypeName.auto,
    device: options.Device = options.DeviceName.auto,
    load_format: options.LoadFormat = options.LoadFormatName.auto,
) -> None:
    """Serve a model with an OpenAI-compatible REST API (FastAPI + uvicorn).

    The server also serves a chat page at / and the API's documentation at /docs. Structured
    output (response_format) and tool calling (tools, tool_choice) are enforced with
    grammar-constrained decoding.
    """
    from ..serve.port import check_port_free
    from ..serve.server import run_api_server
    from ..tools import get_format
    from .loading import model_source

    backend_config = options.engine_config_from(backend, locals())
    template_config = options.load_chat_template_config(chat_template)
    check_port_free(server_name, server_port)  # before a download or a load of minutes
    if tool_call_parser:
        get_format(tool_call_parser)
    source = model_source(model_path, model_name, backend_config, trust_remote_code)
    err_console.print(f"Loading {source.display_name}...", style="dim", markup=False,
                      highlight=False)
    run_api_server(
        source.path,
        backend=backend,
        backend_config=backend_config,
        chat_template_config=template_config,
        model_name=source.name,
        engine_process=engine_process,
        tool_call_parser=tool_call_parser,
        server_name=server_name,
        server_port=server_port,
        api_keys=_split(api_keys),
        ssl=ssl,
        log_level=log_level.value,
        allow_origins=_split(allow_origins),
        allow_credentials=allow_credentials,
        allow_methods=_split(allow_methods),
        allow_headers=_split(allow_headers),
        max_body_mb=max_body_mb,
        public_metrics=public_metrics,
        public_docs=public_docs,
        special_tokens_in_messages=special_tokens_in_messages,
    )


@serve_app.command("api_client", cls=LmforgeCommand)
def api_client(
    api_server_url: Annotated[
        str, typer.Argument(help="The server's URL, e.g. http://127.0.0.1:23333.")
    ],
    api_key: Annotated[
        str | None, typer.Option("--api-key", metavar="KEY",
                                 help="The API key, if the server needs one.")
    ] = None,
    session_id: Annotated[
        int, typer.Option("--session-id", metavar="N", help="Id of the chat session on the "
                          "server.")
    ] = 1,
) -> None:
    """Chat in the terminal with a running api_server (reads piped standard input too).

    The words and keys are lmforge chat's: 'reset' starts a new conversation, 'exit' or Ctrl-D
    quits, Ctrl-C stops a reply.
    """
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
