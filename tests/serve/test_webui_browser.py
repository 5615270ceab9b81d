"""The web chat page in headless Chromium, driven over the DevTools protocol: a user types,
sees the reply stream in, stops a reply, resets the chat."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import time

import httpx
import openai
import pytest
from fake_openai_server import ServerThread, start_fake, start_lmforge, stop
from lmforge.serve.webui import create_remote_webui_app

websockets = pytest.importorskip(
    "websockets", reason="the browser tests need `pip install websockets`"
)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed: apt-get install -y chromium"
)

MODEL = "fake-model"


class Page:
    """One browser tab, driven by DevTools protocol commands over its websocket."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def command(self, method: str, **params) -> dict:
        msg_id = next(self.ids)
        await self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:  # skip events until our answer
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                return reply["result"]

    async def js(self, expression: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.command(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while not (value := await self.js(expression)):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            await asyncio.sleep(0.02)
        return value

    async def open(self, url: str) -> None:
        await self.command("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && !!window.fetch")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium; yields the DevTools HTTP endpoint."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    cmd = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",  # tests may run as root
        "--disable-gpu",
        "--no-first-run",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    endpoint = None
    for line in proc.stderr:
        if "DevTools listening on ws://" in line:
            endpoint = "http://" + line.split("ws://", 1)[1].split("/", 1)[0]
            break
    if endpoint is None:
        proc.kill()
        pytest.skip("Chromium did not start its DevTools endpoint")
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def chat_url():
    """The page served by lmforge in front of an OpenAI server that streams a word per 50 ms."""
    proc, upstream = start_fake("bot", MODEL, delay=0.05)
    with ServerThread(create_remote_webui_app(upstream)) as front:
        yield front.url + "/"
    stop(proc)


async def with_page(endpoint: str, url: str, test) -> None:
    targets = httpx.get(f"{endpoint}/json/list").json()
    ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    async with websockets.connect(ws_url, max_size=None) as ws:
        page = Page(ws)
        await page.open(url)
        await page.wait_for("document.getElementById('model').options.length > 0")
        # Record what the page sends, to check the conversation it carries.
        await page.js(
            "window.sent = []; const f = window.fetch; window.fetch = (u, o) => {"
            " if (o && o.body) window.sent.push(JSON.parse(o.body)); return f(u, o); }; true"
        )
        await test(page)


async def say(page: Page, text: str) -> None:
    """Send a message and wait until its request has left (the page is busy from just before
    then; a quick error may already have ended it, so busy itself is not awaited)."""
    sent = await page.js("window.sent.length")
    await page.js(f"document.getElementById('input').value = {json.dumps(text)}; true")
    await page.js("document.getElementById('send').click(); true")
    await page.wait_for(f"window.sent.length > {sent}")


BUBBLES = (
    "[...document.querySelectorAll('#messages .message')].map(e => [e.className, e.textContent])"
)
LAST_REPLY = "document.querySelector('#messages .assistant:last-child').textContent"


def test_streams_a_multi_turn_chat_and_resets(browser, chat_url):
    async def test(page: Page):
        assert await page.js("document.getElementById('model').value") == MODEL
        await page.js("document.getElementById('system').value = 'Be brief.'; true")
        await say(page, "hello streaming world")
        # Part of the reply is on screen while it is still streaming.
        partial = await page.wait_for(
            f"document.body.dataset.busy === 'true' && {LAST_REPLY}.length > 0 && {LAST_REPLY}"
        )
        assert (
            "bot: hello streaming world".startswith(partial)
            and partial != "bot: hello streaming world"
        )
        await page.wait_for("document.body.dataset.busy === 'false'")
        assert await page.js(LAST_REPLY) == "bot: hello streaming world"

        await say(page, "second turn")
        await page.wait_for("document.body.dataset.busy === 'false'")
        assert await page.js(BUBBLES) == [
            ["message user", "hello streaming world"],
            ["message assistant", "bot: hello streaming world"],
            ["message user", "second turn"],
            ["message assistant", "bot: second turn"],
        ]
        sent = await page.js("window.sent")
        assert sent[1]["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello streaming world"},
            {"role": "assistant", "content": "bot: hello streaming world"},
            {"role": "user", "content": "second turn"},
        ]
        assert sent[1]["stream"] is True and sent[1]["model"] == MODEL
        assert sent[1]["top_k"] == 40 and sent[1]["max_tokens"] == 512

        await page.js("document.getElementById('reset').click(); true")
        assert await page.js(BUBBLES) == []
        await say(page, "fresh start")
        await page.wait_for("document.body.dataset.busy === 'false'")
        assert (await page.js("window.sent"))[2]["messages"][1:] == [
            {"role": "user", "content": "fresh start"}
        ]

    asyncio.run(with_page(browser, chat_url, test))


def test_stop_keeps_the_partial_reply(browser, chat_url):
    async def test(page: Page):
        words = " ".join(f"w{i}" for i in range(100))
        await say(page, words)
        await page.wait_for(f"{LAST_REPLY}.length > 8")
        await page.js("document.getElementById('stop').click(); true")
        await page.wait_for("document.body.dataset.busy === 'false'", timeout=2)
        shown = await page.js(LAST_REPLY)
        assert ("bot: " + words).startswith(shown) and len(shown) < 60
        assert await page.js("document.getElementById('status').textContent") == "Stopped."

    asyncio.run(with_page(browser, chat_url, test))


def test_model_text_is_shown_as_text_and_errors_are_reported(browser, chat_url):
    async def test(page: Page):
        attack = '<img src=x onerror="window.pwned=1"> <b>bold</b>'
        await say(page, attack)
        await page.wait_for("document.body.dataset.busy === 'false'")
        assert await page.js(LAST_REPLY) == "bot: " + attack
        assert await page.js("document.querySelectorAll('#messages img, #messages b').length") == 0
        assert await page.js("window.pwned === undefined")

        await page.js(
            "const o = document.createElement('option'); o.value = 'nope';"
            "document.getElementById('model').append(o); o.selected = true; true"
        )
        await say(page, "anyone there?")
        await page.wait_for("document.body.dataset.busy === 'false'")
        error = await page.js(
            "document.querySelector('#messages .assistant:last-child .error').textContent"
        )
        assert "'nope' does not exist" in error
        # The failed turn is not resent with the next request.
        await page.js("document.getElementById('model').value = 'fake-model'; true")
        await say(page, "retry")
        await page.wait_for("document.body.dataset.busy === 'false'")
        roles = [m["role"] for m in (await page.js("window.sent"))[-1]["messages"]]
        assert roles == ["user", "assistant", "user"]

    asyncio.run(with_page(browser, chat_url, test))


def test_chat_with_a_real_model_served_by_lmforge(browser, tiny_llama_dir):
    proc, url = start_lmforge("serve", "gradio", str(tiny_llama_dir), "--model-name", "tiny")
    try:
        # Greedy decoding, so the page must show exactly what the API answers.
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        expected = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Hello there"}],
            temperature=0,
            top_p=0.9,
            max_tokens=12,
            extra_body={"top_k": 40},
        )
        expected = expected.choices[0].message.content
        assert expected

        async def test(page: Page):
            assert await page.js("document.getElementById('model').value") == "tiny"
            await page.js(
                "document.getElementById('temperature').value = '0';"
                "document.getElementById('max_tokens').value = '12'; true"
            )
            await say(page, "Hello there")
            await page.wait_for("document.body.dataset.busy === 'false'", timeout=60)
            assert await page.js(LAST_REPLY) == expected
            await page.js("document.getElementById('reset').click(); true")
            assert await page.js(BUBBLES) == []

        asyncio.run(with_page(browser, url + "/", test))
    finally:
        stop(proc)
