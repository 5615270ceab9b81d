"""API keys, metrics, client disconnects and many concurrent streams, against the fake engine."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import openai
import pytest
from fake_engine import WORDS
from server_process import fake_server_process

MODEL = "fake-model"
LONG = {"ignore_eos": True, "max_tokens": 50, "temperature": 0}  # 50 tokens: 2.5 s at 50 ms each


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    yield from fake_server_process(tmp_path_factory.mktemp("keyed"), "--api-keys", "k1", "k2")


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    yield from fake_server_process(tmp_path_factory.mktemp("slow"), "--delay", "0.05")


def parse_metrics(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def wait_idle(url: str, timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        metrics = parse_metrics(httpx.get(f"{url}/metrics").text)
        if metrics["lmforge_num_requests_running"] == 0 or time.monotonic() > deadline:
            return metrics
        time.sleep(0.05)


# --- API keys ------------------------------------------------------------------------------------


def test_api_keys(keyed_server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    url = f"{keyed_server.url}/v1/chat/completions"
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic k1"}):
        r = httpx.post(url, json=body, headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["error"]["code"] == "invalid_api_key"
    for key in ("k1", "k2"):
        assert (
            httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}).status_code
            == 200
        )
    assert httpx.get(f"{keyed_server.url}/v1/models").status_code == 401
    assert httpx.get(f"{keyed_server.url}/health").status_code == 200
    good = openai.OpenAI(api_key="k2", base_url=f"{keyed_server.url}/v1", max_retries=0)
    assert good.models.list().data[0].id == MODEL
    bad = openai.OpenAI(api_key="k3", base_url=f"{keyed_server.url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


# --- metrics -------------------------------------------------------------------------------------


def test_metrics_are_prometheus_text_and_count(fake_server):
    client = openai.OpenAI(api_key="x", base_url=f"{fake_server.url}/v1", max_retries=0)
    before = parse_metrics(httpx.get(f"{fake_server.url}/metrics").text)
    for _ in range(3):
        client.completions.create(model=MODEL, prompt="a b", max_tokens=4, temperature=0)
    r = httpx.get(f"{fake_server.url}/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE lmforge_request_latency_seconds histogram" in r.text
    after = parse_metrics(r.text)
    assert after["lmforge_prompt_tokens_total"] - before["lmforge_prompt_tokens_total"] == 6
    assert (
        after["lmforge_generation_tokens_total"] - before["lmforge_generation_tokens_total"] == 12
    )
    count = "lmforge_request_latency_seconds_count"
    assert after[count] - before[count] == 3
    ttft = "lmforge_time_to_first_token_seconds"
    assert after[f"{ttft}_count"] - before[f"{ttft}_count"] == 3
    assert after[f'{ttft}_bucket{{le="+Inf"}}'] == after[f"{ttft}_count"]
    key = 'lmforge_http_requests_total{endpoint="/v1/completions",status="200"}'
    assert after[key] - before.get(key, 0) == 3
    assert after["lmforge_kv_cache_blocks_total"] == 4096


# --- disconnects ---------------------------------------------------------------------------------


def test_closed_stream_aborts_its_request(slow_server):
    body = {"model": MODEL, "prompt": "hi", "stream": True, **LONG}
    start = time.monotonic()
    with httpx.stream("POST", f"{slow_server.url}/v1/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        assert (
            parse_metrics(httpx.get(f"{slow_server.url}/metrics").text)[
                "lmforge_num_requests_running"
            ]
            == 1
        )
    metrics = wait_idle(slow_server.url, 2.0)
    assert time.monotonic() - start < 2.0  # well before the 2.5 s the request would take
    assert metrics["lmforge_num_requests_running"] == 0
    assert metrics["lmforge_kv_cache_blocks_used"] == 0


def test_non_streaming_client_that_gives_up_aborts_its_request(slow_server):
    body = {"model": MODEL, "prompt": "hi", **LONG}
    start = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{slow_server.url}/v1/completions", json=body, timeout=0.3)
    metrics = wait_idle(slow_server.url, 2.0)
    assert time.monotonic() - start < 2.0
    assert metrics["lmforge_kv_cache_blocks_used"] == 0


KILLED_CLIENT = """
import sys, httpx
body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "stream": True,
        "ignore_eos": True, "max_tokens": 50, "n": 2}
with httpx.stream("POST", sys.argv[1] + "/v1/chat/completions", json=body, timeout=30) as r:
    for line in r.iter_lines():
        print(line, flush=True)
"""


def test_killed_clients_leave_the_server_healthy(slow_server):
    clients = [
        subprocess.Popen(
            [sys.executable, "-c", KILLED_CLIENT, slow_server.url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for c in clients:
        assert c.stdout.readline().startswith("data: ")  # streaming has begun
    assert wait_idle(slow_server.url, 0)["lmforge_num_requests_running"] == 4
    for c in clients:
        c.kill()
        c.wait()
        c.stdout.close()
    metrics = wait_idle(slow_server.url, 2.0)
    assert metrics["lmforge_num_requests_running"] == 0
    assert metrics["lmforge_kv_cache_blocks_used"] == 0
    r = httpx.post(
        f"{slow_server.url}/v1/completions",
        json={"model": MODEL, "prompt": "ok", "max_tokens": 2, "temperature": 0},
    )
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == f" ok {WORDS[0]}"


# --- concurrency ---------------------------------------------------------------------------------


def test_256_concurrent_streams_complete_unmixed(fake_server):
    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[int, str, str | None]:
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"request r{i}"}],
            temperature=0,
            stream=True,
        )
        text, finish = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        return i, text, finish

    async def run():
        http = httpx.AsyncClient(limits=httpx.Limits(max_connections=256), timeout=60)
        client = openai.AsyncOpenAI(
            api_key="x", base_url=f"{fake_server.url}/v1", http_client=http, max_retries=0
        )
        results = await asyncio.gather(*(one(client, i) for i in range(256)))
        await client.close()
        return results

    start = time.monotonic()
    results = asyncio.run(run())
    assert time.monotonic() - start < 60
    tail = " ".join(WORDS[:7])
    for i, text, finish in results:
        assert text == f" r{i} {tail}", i
        assert finish == "stop"
    assert wait_idle(fake_server.url, 5)["lmforge_kv_cache_blocks_used"] == 0
