"""The request distributor over HTTP, in front of OpenAI-compatible node processes on loopback."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import openai
import pytest
from fake_openai_server import ServerThread, start_fake, stop
from lmforge.serve.proxy import create_proxy_app

MODEL = "fake-model"


@pytest.fixture(scope="module")
def two_nodes():
    """Nodes "a" and "b" serving MODEL, streaming one word per 20 ms."""
    procs = [start_fake(name, MODEL, delay=0.02) for name in ("a", "b")]
    yield [url for _, url in procs]
    for proc, _ in procs:
        stop(proc)


def node_of(text: str) -> str:
    return text.split(":", 1)[0]


async def chat_many(base: str, n: int, stream: bool = False, concurrent: bool = False) -> list[str]:
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0)

    async def one(i: int) -> str:
        messages = [{"role": "user", "content": f"hello {i}"}]
        if not stream:
            resp = await client.chat.completions.create(model=MODEL, messages=messages)
            return resp.choices[0].message.content
        chunks = await client.chat.completions.create(model=MODEL, messages=messages, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in chunks])

    try:
        if concurrent:
            return list(await asyncio.gather(*(one(i) for i in range(n))))
        return [await one(i) for i in range(n)]
    finally:
        await client.close()


def test_forwards_openai_routes_streaming_and_not(two_nodes):
    with ServerThread(create_proxy_app(nodes=two_nodes)) as proxy:
        models = httpx.get(f"{proxy.url}/v1/models").json()
        assert [m["id"] for m in models["data"]] == [MODEL]
        client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key="none", max_retries=0)
        messages = [{"role": "user", "content": "tell me a story"}]
        full = client.chat.completions.create(model=MODEL, messages=messages)
        assert full.choices[0].message.content in ("a: tell me a story", "b: tell me a story")
        stream = client.chat.completions.create(model=MODEL, messages=messages, stream=True)
        deltas = [c.choices[0].delta.content for c in stream if c.choices[0].delta.content]
        assert len(deltas) == 5 and "".join(deltas)[1:] == ": tell me a story"
        completion = client.completions.create(model=MODEL, prompt="once upon", stream=True)
        assert "".join(c.choices[0].text for c in completion)[1:] == ": once upon"

        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="nope", messages=messages)
        assert missing.value.body["code"] == "model_not_found"
        bad = httpx.post(f"{proxy.url}/v1/chat/completions", json={"messages": messages})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "model"
        # Unfinished counts return to zero and every request left a latency sample.
        status = httpx.get(f"{proxy.url}/nodes/status").json()
        assert all(s["unfinished"] == 0 for s in status.values())
        assert sum(len(s["latency"]) for s in status.values()) == 3


def test_nodes_add_status_remove(two_nodes):
    a, b = two_nodes
    with ServerThread(create_proxy_app()) as proxy:
        assert httpx.get(f"{proxy.url}/nodes/status").json() == {}
        assert httpx.get(f"{proxy.url}/v1/models").json()["data"] == []
        added = httpx.post(f"{proxy.url}/nodes/add", json={"url": a})
        assert added.status_code == 200 and added.json()["status"]["models"] == [MODEL]
        declared = {"url": b + "/", "status": {"models": ["other"], "speed": 3}}
        assert httpx.post(f"{proxy.url}/nodes/add", json=declared).status_code == 200
        status = httpx.get(f"{proxy.url}/nodes/status").json()
        assert set(status) == {a, b}
        assert status[b]["speed"] == 3 and status[b]["alive"] is True
        ids = [m["id"] for m in httpx.get(f"{proxy.url}/v1/models").json()["data"]]
        assert ids == [MODEL, "other"]

        unreachable = httpx.post(f"{proxy.url}/nodes/add", json={"url": "http://127.0.0.1:1"})
        assert unreachable.status_code == 400
        assert "start its api_server" in unreachable.json()["error"]["message"]

        assert httpx.post(f"{proxy.url}/nodes/remove", params={"node_url": a}).status_code == 200
        assert httpx.post(f"{proxy.url}/nodes/remove", json={"url": b}).status_code == 200
        assert httpx.get(f"{proxy.url}/nodes/status").json() == {}
        gone = httpx.post(f"{proxy.url}/nodes/remove", params={"node_url": a})
        assert gone.status_code == 400 and "Unknown node" in gone.json()["error"]["message"]


def test_random_strategy_follows_declared_speeds(two_nodes):
    a, b = two_nodes
    with ServerThread(create_proxy_app(strategy="random")) as proxy:
        httpx.post(f"{proxy.url}/nodes/add", json={"url": a, "status": {"speed": 4}})
        httpx.post(f"{proxy.url}/nodes/add", json={"url": b, "status": {"speed": 1}})
        texts = asyncio.run(chat_many(proxy.url, 60, concurrent=True))
    counts = Counter(map(node_of, texts))
    # Expected 48 / 12; the bound is loose enough to fail about once in a million runs.
    assert 36 <= counts["a"] <= 58, counts


def test_min_expected_latency_spreads_concurrent_load(two_nodes):
    with ServerThread(create_proxy_app("min_expected_latency", nodes=two_nodes)) as proxy:
        texts = asyncio.run(chat_many(proxy.url, 16, stream=True, concurrent=True))
    counts = Counter(map(node_of, texts))
    assert abs(counts["a"] - counts["b"]) <= 4, counts


def test_min_observed_latency_prefers_the_fast_node():
    procs = [start_fake("fast", MODEL, delay=0.005), start_fake("slow", MODEL, delay=0.1)]
    try:
        urls = [url for _, url in procs]
        with ServerThread(create_proxy_app("min_observed_latency", nodes=urls)) as proxy:
            texts = asyncio.run(chat_many(proxy.url, 10))
    finally:
        for proc, _ in procs:
            stop(proc)
    counts = Counter(map(node_of, texts))
    assert counts["slow"] == 1 and counts["fast"] == 9, counts


def test_killed_node_fails_over_and_revives():
    survivor, survivor_url = start_fake("a", MODEL, delay=0.01)
    victim, victim_url = start_fake("b", MODEL, delay=0.01)
    port = int(victim_url.rsplit(":", 1)[1])
    app = create_proxy_app(nodes=[survivor_url, victim_url], health_interval=0.2)
    try:
        with ServerThread(app) as proxy:

            async def load():
                # Streams keep running while the node dies: in-flight ones may fail once
                # they have streamed, later ones must all succeed on the survivor.
                task = asyncio.create_task(chat_many(proxy.url, 40, stream=True, concurrent=True))
                await asyncio.sleep(0.05)
                victim.kill()
                victim.wait()
                await asyncio.gather(task, return_exceptions=True)
                return await chat_many(proxy.url, 20, stream=True, concurrent=True)

            later = asyncio.run(load())
            assert [node_of(t) for t in later] == ["a"] * 20
            assert all(t.startswith("a: hello") for t in later)
            status = httpx.get(f"{proxy.url}/nodes/status").json()
            assert status[victim_url]["alive"] is False and status[survivor_url]["alive"]

            revived, _ = start_fake("b", MODEL, delay=0.01, port=port)
            try:
                deadline = time.monotonic() + 10
                while not httpx.get(f"{proxy.url}/nodes/status").json()[victim_url]["alive"]:
                    assert time.monotonic() < deadline, "the revived node was not noticed"
                    time.sleep(0.1)
                texts = asyncio.run(chat_many(proxy.url, 16, concurrent=True))
                assert "b" in map(node_of, texts)
            finally:
                stop(revived)
    finally:
        stop(survivor)
        stop(victim)


def test_node_dying_mid_stream_ends_the_stream_with_an_error_event():
    victim, victim_url = start_fake("b", MODEL, delay=0.3)
    try:
        with ServerThread(create_proxy_app(nodes=[victim_url])) as proxy:
            body = {
                "model": MODEL,
                "stream": True,
                "messages": [{"role": "user", "content": "x y"}],
            }
            with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=body) as resp:
                lines = resp.iter_lines()
                first = next(line for line in lines if line)
                assert '"b:"' in first
                victim.kill()
                rest = [line for line in lines if line]
            assert len(rest) == 1 and '"server_error"' in rest[0]
            status = httpx.get(f"{proxy.url}/nodes/status").json()[victim_url]
            assert status["alive"] is False and status["unfinished"] == 0
    finally:
        stop(victim)
