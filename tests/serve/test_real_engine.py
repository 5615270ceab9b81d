"""``lmforge serve api_server`` with the real engine: a tiny random Llama (SmolLM2's tokenizer)
for speed, and the SmolLM2 demo model itself through ``lmforge.serve()``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import lmforge
import openai
import pytest
from lmforge.messages import PytorchEngineConfig
from server_process import TINY_SESSION_LEN as SESSION_LEN
from server_process import free_port
from test_server_robustness import parse_metrics, wait_idle


@pytest.fixture(scope="module")
def client(tiny_server):
    return openai.OpenAI(api_key="x", base_url=f"{tiny_server.url}/v1", max_retries=0)


def greedy(client, prompt, **kw):
    return client.completions.create(model="tiny", prompt=prompt, temperature=0, **kw)


def test_fields_take_effect(client):
    whole = greedy(client, "The cat sat on", max_tokens=12, extra_body={"ignore_eos": True})
    text = whole.choices[0].text
    assert whole.usage.completion_tokens == 12 and whole.choices[0].finish_reason == "length"
    # stop: the text ends right before the first occurrence of a stop string taken from it.
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    stopped = greedy(client, "The cat sat on", max_tokens=12, stop=[stop]).choices[0]
    assert stopped.text == text[: text.index(stop)] and stopped.finish_reason == "stop"
    # token-id prompts count as given
    ids = greedy(client, [1, 400, 500, 600], max_tokens=1)
    assert ids.usage.prompt_tokens == 4
    # streaming yields the same greedy text
    stream = greedy(
        client, "The cat sat on", max_tokens=12, stream=True, extra_body={"ignore_eos": True}
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == text


def test_seed_reproduces_and_n_choices(client):
    def sample(seed):
        r = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], seed=seed, n=2,
            max_tokens=8, temperature=1.0,
        )  # fmt: skip
        assert [c.index for c in r.choices] == [0, 1]
        assert r.usage.completion_tokens <= 16
        return [c.message.content for c in r.choices]

    first = sample(1234)
    assert sample(1234) == first
    assert sample(4321) != first


def test_logprobs_of_greedy_tokens_are_the_top_ones(client):
    r = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], temperature=0,
        logprobs=True, top_logprobs=3, max_tokens=6,
    )  # fmt: skip
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 6
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for item in content:
        assert len(item.top_logprobs) == 3
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob)
        assert item.logprob <= 0


def test_prompt_longer_than_session_len_is_400(client):
    with pytest.raises(openai.BadRequestError) as err:
        greedy(client, [5] * (SESSION_LEN + 10))
    assert err.value.body["code"] == "context_length_exceeded"


def test_interactive_turns_reuse_the_session(tiny_server):
    with lmforge.client(tiny_server.url) as api:
        (one,) = api.chat_interactive_v1("hello", session_id=3, interactive_mode=True,
                                         request_output_len=4, top_k=1)  # fmt: skip
        (two,) = api.chat_interactive_v1("more", session_id=3, interactive_mode=True,
                                         request_output_len=4, top_k=1)  # fmt: skip
    assert two["history_tokens"] == one["input_tokens"] + one["tokens"]
    assert two["input_tokens"] > two["history_tokens"]


HOSTILE = [
    # (route, JSON body or raw bytes)
    ("/v1/completions", {"model": "tiny", "prompt": [49152], "max_tokens": 4}),
    ("/v1/completions", {"model": "tiny", "prompt": [1, -1, 2]}),
    ("/v1/completions", {"model": "tiny", "prompt": [[3, 4], [10**12]]}),
    ("/v1/completions", {"model": "tiny", "prompt": ["a"] * 300, "max_tokens": 1}),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}'),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": '),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                              "stream": "yes"}),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}],
                              "max_tokens": 10**30, "seed": 2**70}),
    ("/v1/chat/completions", {"model": "tiny", "max_tokens": 2, "session_id": 1,
                              "messages": [{"role": "user", "content": "<|im_end|><|im_start|>"}]}),
    ("/v1/chat/completions", {"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
    ("/v1/chat/interactive", {"session_id": 1, "cancel": True}),
    ("/v1/chat/interactive", {"prompt": "hi", "session_id": 1, "interactive_mode": True,
                              "request_output_len": 3}),
    ("/v1/completions", {"model": "tiny", "prompt": "word " * 5000, "max_tokens": 1}),
]  # fmt: skip


async def _hostile(url: str, stop: asyncio.Event) -> list[int]:
    """Send malformed and hostile requests, and streams dropped midway, until ``stop``."""
    statuses = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        while not stop.is_set():
            for route, body in HOSTILE:
                if isinstance(body, bytes):
                    r = await http.post(route, content=body,
                                        headers={"content-type": "application/json"})  # fmt: skip
                else:
                    r = await http.post(route, json=body)
                statuses.append(r.status_code)
            dropped = {"model": "tiny", "prompt": "Drop me", "max_tokens": 50, "stream": True}
            async with http.stream("POST", "/v1/completions", json=dropped) as r:
                async for _ in r.aiter_lines():
                    break  # hang up after the first chunk
    return statuses


def test_256_concurrent_streams_match_their_solo_runs_beside_a_hostile_client(client, tiny_server):
    prompts = [f"Request number {i} says" for i in range(16)]
    reference = {p: greedy(client, p, max_tokens=6).choices[0].text for p in prompts}

    async def one(aclient, prompt):
        stream = await aclient.completions.create(
            model="tiny", prompt=prompt, temperature=0, max_tokens=6, stream=True
        )
        return prompt, "".join([c.choices[0].text async for c in stream if c.choices])

    async def run():
        http = httpx.AsyncClient(limits=httpx.Limits(max_connections=256), timeout=120)
        aclient = openai.AsyncOpenAI(
            api_key="x", base_url=f"{tiny_server.url}/v1", http_client=http, max_retries=0
        )
        stop = asyncio.Event()
        hostile = asyncio.create_task(_hostile(tiny_server.url, stop))
        results = await asyncio.gather(*(one(aclient, prompts[i % 16]) for i in range(256)))
        stop.set()
        await aclient.close()
        return results, await hostile

    start = time.monotonic()
    results, statuses = asyncio.run(run())
    assert time.monotonic() - start < 90
    assert len(results) == 256
    for prompt, text in results:
        assert text == reference[prompt], prompt
    assert statuses and max(statuses) < 500, sorted(set(statuses))
    assert {400, 404} <= set(statuses)
    metrics = wait_idle(tiny_server.url, 10)
    assert metrics["lmforge_num_requests_running"] == 0
    assert metrics["lmforge_num_requests_waiting"] == 0
    assert metrics["lmforge_kv_cache_blocks_used"] == 0
    assert metrics["lmforge_engine_steps_total"] > 0
    assert metrics["lmforge_engine_failed_steps_total"] == 0
    assert "Traceback" not in tiny_server.output()


KILLED_CLIENT = """
import sys, httpx
body = {"model": "tiny", "prompt": "Once upon a time", "stream": True, "ignore_eos": True,
        "max_tokens": 200}
with httpx.stream("POST", sys.argv[1] + "/v1/completions", json=body, timeout=60) as r:
    for line in r.iter_lines():
        print(line, flush=True)
"""


def test_killed_clients_free_their_kv_blocks(tiny_server):
    clients = [
        subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, tiny_server.url],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    for c in clients:
        assert c.stdout.readline().startswith("data: ")
    assert (
        parse_metrics(httpx.get(f"{tiny_server.url}/metrics").text)["lmforge_kv_cache_blocks_used"]
        > 0
    )
    for c in clients:
        c.kill()
        c.wait()
        c.stdout.close()
    metrics = wait_idle(tiny_server.url, 10)
    assert metrics["lmforge_num_requests_running"] == 0
    assert metrics["lmforge_kv_cache_blocks_used"] == 0
    assert metrics["lmforge_kv_cache_tokens_total"] == 1024 * 64
    assert httpx.get(f"{tiny_server.url}/health").status_code == 200


def test_unavailable_feature_flag_is_one_sentence():
    cmd = [sys.executable, "-m", "lmforge.cli.main", "serve", "api_server", "--tp", "5"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "does not support tp=5" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_serve_the_demo_model_with_the_python_api(tmp_path):
    port = free_port()
    config = PytorchEngineConfig(session_len=512, cache_max_entry_count=64)
    api = lmforge.serve(None, server_name="127.0.0.1", server_port=port, backend_config=config)
    try:
        model = api.available_models[0]
        (reply,) = api.chat_completions_v1(
            model, [{"role": "user", "content": "What is the capital of France?"}],
            temperature=0, max_tokens=24,
        )  # fmt: skip
        assert "Paris" in reply["choices"][0]["message"]["content"]
    finally:
        api.close()
    assert api.process.returncode is not None
