"""What the server prints once it is ready: where its API, web UI and docs are."""

from __future__ import annotations

# Addresses that mean "every interface": a browser reaches them on the loopback address.
_ANY_HOST = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}


def browsable_url(scheme: str, host: str, port: int) -> str:
    """A URL a browser on this machine can open for a server listening on ``host``."""
    host = _ANY_HOST.get(host, f"[{host}]" if ":" in host else host)
    return f"{scheme}://{host}:{port}"


def startup_banner(model_name: str, scheme: str, host: str, port: int,
                   web_ui: bool = True) -> str:
    """The lines that say what is served and where."""
    url = browsable_url(scheme, host, port)
    lines = [f"Serving {model_name} on {scheme}://{host}:{port}",
             f"  OpenAI API: {url}/v1"]
    if web_ui:
        lines.append(f"  Web UI:     {url}/")
    lines += [f"  API docs:   {url}/docs", "Press Ctrl-C to stop."]
    return "\n".join(lines)
