"""`lmforge serve gradio` as a user starts it: a local model, or the URL of an api_server."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import openai
import pytest
from fake_openai_server import free_port, start_fake, start_lmforge, stop
from lmforge.cli.serve_extra import _server_url


def chat(url: str, model: str, stream: bool, **kwargs) -> str:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
    messages = [{"role": "user", "content": "Say hello to the web."}]
    if not stream:
        resp = client.chat.completions.create(model=model, messages=messages, **kwargs)
        return resp.choices[0].message.content
    chunks = client.chat.completions.create(model=model, messages=messages, stream=True, **kwargs)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def assert_serves_the_page(url: str) -> None:
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "lmforge chat" in page.text
    assert httpx.get(f"{url}/webui/chat.js").status_code == 200


def test_argument_names_a_server_or_a_model(tmp_path):
    assert _server_url("http://10.0.0.1:23333") == "http://10.0.0.1:23333"
    assert _server_url("https://example.org") == "https://example.org"
    assert _server_url("localhost:23333") == "http://localhost:23333"
    assert _server_url(None) is None
    assert _server_url(str(tmp_path)) is None
    (tmp_path / "model:1").mkdir()
    assert _server_url(str(tmp_path / "model:1")) is None


def test_gradio_in_front_of_a_running_api_server():
    upstream, upstream_url = start_fake("bot", "fake-model")
    try:
        proc, url = start_lmforge("serve", "gradio", upstream_url)
        try:
            assert_serves_the_page(url)
            assert chat(url, "fake-model", stream=True) == "bot: Say hello to the web."
        finally:
            stop(proc)
    finally:
        stop(upstream)


def test_gradio_reports_an_unreachable_server():
    result = subprocess.run(
        [shutil.which("lmforge"), "serve", "gradio", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Cannot reach the api_server" in result.stderr + result.stdout


def test_gradio_serves_a_local_model_with_the_api(tiny_llama_dir):
    proc, url = start_lmforge(
        "serve", "gradio", str(tiny_llama_dir), "--model-name", "tiny", "--session-len", "256"
    )
    try:
        assert_serves_the_page(url)
        assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["tiny"]
        # Greedy decoding: the streamed reply equals the whole one.
        full = chat(url, "tiny", stream=False, max_tokens=8, temperature=0)
        assert full and chat(url, "tiny", stream=True, max_tokens=8, temperature=0) == full
    finally:
        stop(proc)


@pytest.mark.slow
def test_gradio_serves_the_demo_model(smollm2_gguf):
    proc, url = start_lmforge("serve", "gradio", timeout=300)
    try:
        assert_serves_the_page(url)
        (model,) = [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]]
        reply = chat(url, model, stream=True, max_tokens=16, temperature=0)
        assert "hello" in reply.lower()
    finally:
        stop(proc)
