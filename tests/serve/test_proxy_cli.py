"""`lmforge serve proxy` as a user starts it, in front of node processes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
from fake_openai_server import free_port, start_fake, start_lmforge, stop

MODEL = "fake-model"


def test_proxy_command_distributes_and_picks_up_late_nodes():
    node_a, url_a = start_fake("a", MODEL)
    late_port = free_port()
    late_url = f"http://127.0.0.1:{late_port}"
    proxy, url = start_lmforge(
        "serve",
        "proxy",
        "--strategy",
        "random",
        "--node",
        url_a,
        "--node",
        late_url,
        "--health-interval",
        "0.2",
    )
    node_b = None
    try:
        status = httpx.get(f"{url}/nodes/status").json()
        assert status[url_a]["alive"] and not status[late_url]["alive"]

        node_b, _ = start_fake("b", MODEL, port=late_port)
        deadline = time.monotonic() + 10
        while not httpx.get(f"{url}/nodes/status").json()[late_url]["alive"]:
            assert time.monotonic() < deadline, "the late node never joined"
            time.sleep(0.1)
        assert httpx.get(f"{url}/nodes/status").json()[late_url]["models"] == [MODEL]

        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        served = Counter()
        for i in range(24):
            messages = [{"role": "user", "content": f"hi {i}"}]
            text = client.chat.completions.create(model=MODEL, messages=messages)
            served[text.choices[0].message.content.split(":")[0]] += 1
        assert set(served) == {"a", "b"}, served
    finally:
        stop(proxy)
        stop(node_a)
        if node_b is not None:
            stop(node_b)


def test_proxy_command_rejects_a_bad_node_url():
    result = subprocess.run(
        [shutil.which("lmforge"), "serve", "proxy", "--node", "localhost-23333"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Invalid node url 'localhost-23333'" in result.stderr + result.stdout


def test_proxy_in_front_of_two_real_api_servers(tiny_llama_dir):
    args = ("serve", "api_server", str(tiny_llama_dir), "--model-name", "tiny")
    with ThreadPoolExecutor(2) as pool:
        servers = list(pool.map(lambda _: start_lmforge(*args), range(2)))
    (first, first_url), (second, second_url) = servers
    proxy, url = start_lmforge("serve", "proxy", "--node", first_url, "--node", second_url)
    try:

        async def ask(n: int) -> list[str]:
            client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)

            async def one(i: int) -> str:
                messages = [{"role": "user", "content": f"Count to {i}"}]
                chunks = await client.chat.completions.create(
                    model="tiny", messages=messages, max_tokens=6, stream=True
                )
                return "".join(
                    [c.choices[0].delta.content or "" async for c in chunks if c.choices]
                )

            async with client:
                return await asyncio.gather(*(one(i) for i in range(n)))

        assert all(asyncio.run(ask(6)))
        status = httpx.get(f"{url}/nodes/status").json()
        assert all(len(s["latency"]) >= 1 for s in status.values()), status

        stop(second)
        assert all(asyncio.run(ask(4)))
        status = httpx.get(f"{url}/nodes/status").json()
        assert status[second_url]["alive"] is False
        assert len(status[first_url]["latency"]) >= 7
    finally:
        stop(proxy)
        stop(first)
        stop(second)
