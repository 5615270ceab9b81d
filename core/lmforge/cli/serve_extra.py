"""``lmforge serve gradio`` (the web chat UI) and ``lmforge serve proxy`` (the request
distributor), added to :data:`lmforge.cli.serve.serve_app` on import."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..errors import ConfigError
from . import options
from .command import LmforgeCommand
from .console import err_console
from .serve import SERVER_PANEL, serve_app

# A bare "host:port" names a server, as in LMDeploy, unless such a file exists.
_HOST_PORT = re.compile(r"^[\w.\-]+:\d+$")


class StrategyName(str, Enum):
    random = "random"
    min_expected_latency = "min_expected_latency"
    min_observed_latency = "min_observed_latency"


ServerName = Annotated[
    str,
    typer.Option("--server-name", "--host", metavar="HOST", help="Address to listen on.",
                 rich_help_panel=SERVER_PANEL),
]


def _server_url(model_path_or_server: str | None) -> str | None:
    """The api_server URL the argument names, or None when it names a model."""
    if model_path_or_server is None:
        return None
    if model_path_or_server.startswith(("http://", "https://")):
        return model_path_or_server
    if _HOST_PORT.match(model_path_or_server) and not Path(model_path_or_server).exists():
        return f"http://{model_path_or_server}"
    return None


def _check_reachable(url: str) -> None:
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/v1/models", timeout=10.0).raise_for_status()
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"Cannot reach the api_server at {url} ({exc.__class__.__name__}): start it with "
            "`lmforge serve api_server` or check the URL."
        ) from exc


def _run(app, server_name: str, server_port: int) -> None:
    import uvicorn

    uvicorn.run(app, host=server_name, port=server_port, log_level="warning")


def _check_port(server_name: str, server_port: int) -> None:
    from ..serve.port import check_port_free

    check_port_free(server_name, server_port)


@serve_app.command("gradio", cls=LmforgeCommand)
def gradio(
    model_path_or_server: Annotated[
        str | None,
        typer.Argument(
            help="An HF model folder, a GGUF file, a Hugging Face Hub id (owner/name), or the "
            "URL of a running api_server (http://host:port); without it, the bundled demo "
            "model.",
            show_default=False,
        ),
    ] = None,
    server_name: ServerName = "0.0.0.0",
    server_port: Annotated[
        int,
        typer.Option("--server-port", "--port", metavar="PORT", help="Port of the web UI.",
                     rich_help_panel=SERVER_PANEL),
    ] = 6006,
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
    """Chat with a model in the browser (web UI at http://SERVER_NAME:SERVER_PORT/).

    A local model is served with the web UI and the OpenAI API together; for the URL of a
    running api_server, the web UI is served in front of it.
    """
    url = _server_url(model_path_or_server)
    _check_port(server_name, server_port)
    if url is not None:
        from ..serve.banner import browsable_url
        from ..serve.webui import create_remote_webui_app

        _check_reachable(url)
        typer.echo(f"Web UI for {url} on {browsable_url('http', server_name, server_port)}/")
        _run(create_remote_webui_app(url), server_name, server_port)
        return

    from ..serve.server import run_api_server
    from .loading import model_source

    backend_config = options.engine_config_from(backend, locals())
    template_config = options.load_chat_template_config(chat_template)
    source = model_source(model_path_or_server, model_name, backend_config, trust_remote_code)
    err_console.print(f"Loading {source.display_name}...", style="dim", markup=False,
                      highlight=False)
    # The api_server serves the web UI at its root path.
    run_api_server(
        source.path,
        backend=backend,
        backend_config=backend_config,
        chat_template_config=template_config,
        model_name=source.name,
        server_name=server_name,
        server_port=server_port,
    )


@serve_app.command("proxy", cls=LmforgeCommand)
def proxy(
    server_name: ServerName = "0.0.0.0",
    server_port: Annotated[
        int,
        typer.Option(
            "--server-port", "--port", metavar="PORT", help="Port of the request distributor.",
            rich_help_panel=SERVER_PANEL,
        ),
    ] = 8000,
    strategy: Annotated[
        StrategyName,
        typer.Option(
            "--strategy", metavar="{random,min_expected_latency,min_observed_latency}",
            help="How a node is chosen: random (weighted by node speed), min_expected_latency "
            "(unfinished requests / speed), min_observed_latency (moving average of latencies).",
        ),
    ] = StrategyName.min_expected_latency,
    nodes: Annotated[
        list[str] | None,
        typer.Option(
            "--node", metavar="URL",
            help="URLs of the api_servers to distribute to; more can be added with "
            "POST /nodes/add.",
        ),
    ] = None,
    health_interval: Annotated[
        float,
        typer.Option(
            "--health-interval", min=0.1, metavar="SECONDS",
            help="Seconds between health checks of the nodes.",
        ),
    ] = 5.0,
) -> None:
    """Distribute OpenAI requests over several api_server nodes (request distributor)."""
    from ..serve.proxy import create_proxy_app

    _check_port(server_name, server_port)
    app = create_proxy_app(strategy.value, nodes=nodes or (), health_interval=health_interval)
    typer.echo(
        f"Request distributor ({strategy.value}) on http://{server_name}:{server_port}; "
        "manage nodes at /nodes/status, /nodes/add and /nodes/remove (API docs at /docs)"
    )
    _run(app, server_name, server_port)
