"""The web chat page: static HTML, JavaScript and CSS shipped with lmforge (no CDN, works
offline) that streams replies from the ``/v1/chat/completions`` route of the server it is
served from."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute

STATIC_DIR = Path(__file__).with_name("static")
ASSETS_PATH = "/webui"
#: The page loads only its own files and talks only to its own server; no site may frame it.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",  # browsers revalidate, so an upgraded lmforge shows at once
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _serves_root(route: BaseRoute) -> bool:
    return getattr(route, "path", None) == "/" and "GET" in (getattr(route, "methods", None) or ())


def mount_webui(app: FastAPI) -> None:
    """Serve the chat page at ``/`` and its assets under ``/webui/``.

    The page takes over ``/``: a route the app already had there (such as a redirect to the API
    docs) is replaced. The page calls ``v1/models`` and ``v1/chat/completions`` relative to
    itself, so ``app`` must serve them (an api_server app, or a proxy to one).
    """
    app.router.routes[:] = [route for route in app.router.routes if not _serves_root(route)]

    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="webui")


def create_remote_webui_app(api_server_url: str, health_interval: float = 5.0) -> FastAPI:
    """The chat page in front of a running api_server at ``api_server_url``.

    The OpenAI routes the page calls are forwarded to that server, streaming included, by the
    request distributor with the server as its only node.
    """
    from ..proxy import create_proxy_app

    app = create_proxy_app(nodes=[api_server_url], health_interval=health_interval)
    mount_webui(app)
    return app


__all__ = ["create_remote_webui_app", "mount_webui"]
