"""``lmforge serve`` as LMDeploy and vLLM users type it: the short form, vLLM's flag names,
space-separated key lists; the startup banner, a busy port found before the model loads, and a
401 that says how to pass a key."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest
from server_process import free_port, start_server, stop_server

LMFORGE = [sys.executable, "-m", "lmforge.cli.main"]


@pytest.fixture(scope="module")
def vllm_style_server(tiny_llama_dir, tmp_path_factory):
    port = free_port()
    cmd = [*LMFORGE, "serve", str(tiny_llama_dir), "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", "256", "--gpu-memory-utilization", "64", "--device", "cpu",
           "--api-keys", "k1", "k2", "--served-model-name", "tiny"]
    server = start_server(cmd, port, tmp_path_factory.mktemp("vllm_style") / "server.log")
    yield server
    stop_server(server)


def test_short_form_and_vllm_names_configure_the_server(vllm_style_server):
    models = httpx.get(f"{vllm_style_server.url}/v1/models",
                       headers={"Authorization": "Bearer k2"}).json()
    assert models["data"][0]["id"] == "tiny"
    assert models["data"][0]["max_model_len"] == 256


def test_space_separated_api_keys_are_all_keys(vllm_style_server):
    for key in ("k1", "k2"):
        reply = httpx.get(f"{vllm_style_server.url}/v1/models",
                          headers={"Authorization": f"Bearer {key}"})
        assert reply.status_code == 200, key


def test_401_says_how_to_pass_a_key(vllm_style_server):
    reply = httpx.get(f"{vllm_style_server.url}/v1/models")
    assert reply.status_code == 401
    message = reply.json()["error"]["message"]
    assert "'Authorization: Bearer <key>'" in message and "--api-keys" in message
    assert "api_key=<key>" in message and "--api-key <key>" in message


def test_banner_names_the_api_web_ui_and_docs(vllm_style_server):
    url = vllm_style_server.url
    log = vllm_style_server.output()
    assert f"Serving tiny on {url}" in log
    assert f"OpenAI API: {url}/v1" in log
    assert f"Web UI:     {url}/" in log
    assert f"API docs:   {url}/docs" in log
    key = {"Authorization": "Bearer k1"}  # with keys set, the docs need one too
    assert httpx.get(f"{url}/").status_code == 200
    assert httpx.get(f"{url}/docs", headers=key).status_code == 200


def test_busy_port_is_found_before_the_model_loads(tiny_llama_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        start = time.monotonic()
        run = subprocess.run([*LMFORGE, "serve", "api_server", str(tiny_llama_dir),
                              "--server-name", "127.0.0.1", "--server-port", str(port)],
                             capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - start
    assert run.returncode == 1
    assert run.stderr.strip() == (
        f"Error: Port {port} on 127.0.0.1 is already in use (another server, or an lmforge "
        "still running?); stop that process or choose another port with --server-port."
    )
    assert "Loading" not in run.stderr and elapsed < 60


def test_a_typo_of_a_serve_command_still_gets_a_suggestion():
    run = subprocess.run([*LMFORGE, "serve", "api_sever", "model"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert "No such command 'api_sever'. Did you mean 'api_server'?" in run.stderr


def test_serve_help_is_the_groups_help():
    run = subprocess.run([*LMFORGE, "serve", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0
    assert "short for `lmforge serve api_server MODEL [OPTIONS]`" in " ".join(run.stdout.split())
    assert "api_client" in run.stdout
