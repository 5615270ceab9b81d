"""``lmforge bench serve`` against a real api_server process serving the tiny model."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest
from lmforge.cli.app import create_app
from typer.testing import CliRunner


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmforge.cli.main", "serve", "api_server", str(tiny_model),
         "--load-format", "dummy", "--device", "cpu", "--server-name", "127.0.0.1",
         "--server-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"api_server exited: {proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("api_server did not start within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("pacing", [["--concurrency", "2"], ["--request-rate", "50"]])
def test_serve_reports_latencies_and_exact_token_counts(server, tmp_path, pacing):
    out = tmp_path / "serve.json"
    result = CliRunner().invoke(create_app(), [
        "bench", "serve", server, "--dataset", "synthetic", "--num-prompts", "5",
        "--input-len", "12", "--output-len", "6", "--vocab-size", "1000", *pacing,
        "--json", str(out)])
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())["rows"][0]
    assert (row["num_requests"], row["completed"], row["failed"]) == (5, 5, 0)
    assert (row["input_tokens"], row["output_tokens"]) == (60, 30)
    assert 0 < row["ttft_p50_s"] <= row["ttft_p99_s"] <= row["latency_p99_s"]
    assert 0 <= row["itl_p50_s"] <= row["itl_p99_s"]
    assert row["request_s"] == pytest.approx(5 / row["elapsed_s"])


def test_serve_names_a_url_without_a_server():
    result = CliRunner().invoke(create_app(), [
        "bench", "serve", f"http://127.0.0.1:{free_port()}", "--dataset", "synthetic",
        "--num-prompts", "1"])
    assert result.exit_code == 1
    assert "No OpenAI-compatible server answers" in result.output


def test_text_prompts_to_several_servers(server, tmp_path):
    """ShareGPT prompts go as text (the server tokenizes them); each URL gets a row."""
    conversations = [{"conversations": [
        {"from": "human", "value": f"Question {i}: what is {i} plus {i}?"},
        {"from": "gpt", "value": f"The answer is {2 * i}, of course."}]} for i in range(6)]
    dataset = tmp_path / "sharegpt.json"
    dataset.write_text(json.dumps(conversations))
    out = tmp_path / "serve.json"
    result = CliRunner().invoke(create_app(), [
        "bench", "serve", server, server, "--dataset", str(dataset), "--num-prompts", "4",
        "--warmup", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["settings"]["prompt_format"] == "text"
    assert [row["url"] for row in report["rows"]] == [server, server]
    for row in report["rows"]:
        assert (row["completed"], row["failed"]) == (4, 0)
