"""The web chat page is served, self-contained, and takes over the app's root path."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.testclient import TestClient
from lmforge.serve.webui import STATIC_DIR, mount_webui


def test_page_and_assets_are_served_at_root():
    app = FastAPI()

    @app.get("/")
    async def root():
        return RedirectResponse("/docs")

    mount_webui(app)
    client = TestClient(app)
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="webui/chat.js">' in page.text
    script = client.get("/webui/chat.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert client.get("/webui/chat.css").status_code == 200
    assert client.get("/webui/missing.js").status_code == 404


def test_page_needs_nothing_from_the_network():
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        # Every reference is relative to the server: no CDN, fonts or absolute API URLs.
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path.name
        assert not re.search(r"fetch\(\s*[\"'`](https?:|/)", text), path.name


def test_model_output_is_never_parsed_as_html():
    script = (STATIC_DIR / "chat.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "document.write" not in script
