"""The OpenAI-compatible endpoints as clients meet them: the official ``openai`` package and raw
HTTP against a real server process around the deterministic fake engine (see fake_engine.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
from fake_engine import EOS_AFTER, WORDS

GREEDY_REPLY = " hi " + " ".join(WORDS[: EOS_AFTER - 1])  # the echo of "hi", then the word list
MODEL = "fake-model"


@pytest.fixture(scope="module")
def client(fake_server) -> openai.OpenAI:
    return openai.OpenAI(api_key="unused", base_url=f"{fake_server.url}/v1", max_retries=0)


@pytest.fixture(scope="module")
def http(fake_server):
    with httpx.Client(base_url=fake_server.url, timeout=30) as c:
        yield c


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def sse_events(body: str) -> list[str]:
    return [line[len("data: ") :] for line in body.splitlines() if line.startswith("data: ")]


# --- happy paths --------------------------------------------------------------------------------


def test_models_lists_the_served_model(client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].object == "model"


def test_chat_completion_whole(client):
    r = client.chat.completions.create(model=MODEL, messages=user("say hi"), temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == GREEDY_REPLY
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (2, EOS_AFTER)
    assert r.usage.total_tokens == 2 + EOS_AFTER


def test_chat_completion_stream_matches_whole_and_reports_usage(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=user("say hi"),
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == GREEDY_REPLY
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == EOS_AFTER


def test_raw_sse_ends_with_done(http):
    body = {"model": MODEL, "messages": user("hi"), "stream": True, "temperature": 0}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    assert all("choices" in json.loads(e) for e in events[:-1])


def test_async_client_stream_and_whole(fake_server):
    async def run():
        aclient = openai.AsyncOpenAI(api_key="x", base_url=f"{fake_server.url}/v1", max_retries=0)
        whole = await aclient.completions.create(model=MODEL, prompt="a b hi", temperature=0)
        stream = await aclient.chat.completions.create(
            model=MODEL, messages=user("hi"), temperature=0, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
        await aclient.close()
        return whole, text

    whole, text = asyncio.run(run())
    assert whole.object == "text_completion" and whole.choices[0].text == GREEDY_REPLY
    assert text == GREEDY_REPLY


def test_completions_prompt_forms(client):
    one = client.completions.create(model=MODEL, prompt="x hi", temperature=0)
    assert one.choices[0].text == GREEDY_REPLY and one.usage.prompt_tokens == 2
    many = client.completions.create(model=MODEL, prompt=["p dog", "q fox fox"], temperature=0)
    assert [c.index for c in many.choices] == [0, 1]
    assert [c.text.split()[0] for c in many.choices] == ["dog", "fox"]
    assert many.usage.prompt_tokens == 5 and many.usage.completion_tokens == 2 * EOS_AFTER
    ids = client.completions.create(model=MODEL, prompt=[3, 1, 4], temperature=0, max_tokens=1)
    assert ids.choices[0].text == " " + WORDS[4] and ids.usage.prompt_tokens == 3
    id_lists = client.completions.create(model=MODEL, prompt=[[0], [2, 3]], temperature=0)
    assert [c.text.split()[0] for c in id_lists.choices] == [WORDS[0], WORDS[3]]


def test_completions_default_max_tokens_is_16_and_respected(client):
    r = client.completions.create(
        model=MODEL, prompt="hi", temperature=0, extra_body={"ignore_eos": True}
    )
    assert r.usage.completion_tokens == 16 and r.choices[0].finish_reason == "length"
    r = client.completions.create(model=MODEL, prompt="hi", temperature=0, max_tokens=3)
    assert r.usage.completion_tokens == 3 and len(r.choices[0].text.split()) == 3


def test_max_tokens_and_max_completion_tokens(client):
    for field in ("max_tokens", "max_completion_tokens"):
        r = client.chat.completions.create(
            model=MODEL, messages=user("hi"), temperature=0, **{field: 2}
        )
        assert r.usage.completion_tokens == 2 and r.choices[0].finish_reason == "length"
        assert r.choices[0].message.content == " hi " + WORDS[0]


def test_n_returns_n_distinct_choices(client):
    r = client.chat.completions.create(model=MODEL, messages=user("hi"), temperature=0, n=3)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 3
    assert r.usage.completion_tokens == 3 * EOS_AFTER
    stream = client.completions.create(
        model=MODEL, prompt=["a", "b"], temperature=0, n=2, stream=True, max_tokens=2
    )
    texts: dict[int, str] = {}
    for chunk in stream:
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
    assert sorted(texts) == [0, 1, 2, 3]
    assert texts[0].split()[0] == "a" and texts[2].split()[0] == "b"


def test_stop_strings_end_the_text_without_them(client):
    for stop in ("fox", ["jumps", "fox"]):
        r = client.chat.completions.create(
            model=MODEL, messages=user("hi"), temperature=0, stop=stop
        )
        content = r.choices[0].message.content
        assert content == " hi the quick brown "
        assert r.choices[0].finish_reason == "stop"


def test_seed_reproduces_and_top_k_defaults_to_unlimited(client):
    def sample(seed, **kw):
        r = client.chat.completions.create(model=MODEL, messages=user("hi"), seed=seed, **kw)
        return r.choices[0].message.content

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)
    # Without top_k the server samples (OpenAI semantics), unlike the engine's greedy default.
    assert sample(7) != GREEDY_REPLY
    assert sample(7, extra_body={"top_k": 1}) == GREEDY_REPLY


def test_chat_logprobs_shapes(client):
    r = client.chat.completions.create(
        model=MODEL, messages=user("hi"), temperature=0, logprobs=True, top_logprobs=2, max_tokens=4
    )
    content = r.choices[0].logprobs.content
    assert len(content) == 4
    assert content[0].token == " hi" and content[0].logprob == -0.5
    assert content[0].bytes == list(b" hi")
    for item in content:
        assert len(item.top_logprobs) == 2
        assert item.top_logprobs[0].logprob >= item.top_logprobs[1].logprob
    r = client.chat.completions.create(model=MODEL, messages=user("hi"), temperature=0)
    assert r.choices[0].logprobs is None


def test_completion_logprobs_shapes(client):
    r = client.completions.create(model=MODEL, prompt="hi", temperature=0, logprobs=3, max_tokens=4)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset == [0, 3, 7, 13]
    assert all(len(top) == 3 for top in lp.top_logprobs)


def test_health_docs_and_openapi(http):
    assert http.get("/health").json() == {"status": "ok"}
    spec = http.get("/openapi.json").json()
    for path in ("/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/chat/interactive"):
        assert path in spec["paths"]
    assert "swagger" in http.get("/docs").text.lower()


def test_plugin_hooks(client, http):
    assert http.get("/plugin/ping").json() == {"pong": True}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=user("hi"), user="blocked")
    assert "may not call /v1/chat/completions" in err.value.body["message"]


# --- errors --------------------------------------------------------------------------------------


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    "field,value",
    [
        ("temperature", -1),
        ("top_p", 0),
        ("top_k", -1),
        ("n", 0),
        ("max_tokens", -5),
        ("min_p", 2),
        ("presence_penalty", 3),
        ("top_logprobs", 50),
        ("repetition_penalty", 0),
    ],
)
def test_invalid_values_are_400_naming_the_field(http, field, value):
    body = {"model": MODEL, "messages": user("hi"), field: value}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    err = error_of(r)
    assert err["param"] == field and field in err["message"]
    assert err["type"] == "invalid_request_error"


def test_missing_and_malformed_bodies(http):
    r = http.post("/v1/chat/completions", json={"model": MODEL})
    assert r.status_code == 400 and error_of(r)["param"] == "messages"
    r = http.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code in (400, 422) and error_of(r)["code"] == "invalid_json"
    r = http.post("/v1/completions", json={"model": MODEL, "prompt": []})
    assert r.status_code == 400 and error_of(r)["param"] == "prompt"
    r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"content": "x"}]})
    assert r.status_code == 400 and "role" in error_of(r)["message"]


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9", messages=user("hi"))
    assert err.value.body["code"] == "model_not_found" and "fake-model" in err.value.body["message"]


def test_prompt_longer_than_session_is_400(client, http):
    long = " ".join(["w"] * 100)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=user(long))
    assert err.value.body["code"] == "context_length_exceeded"
    assert "session_len" in err.value.body["message"]
    r = http.post("/v1/completions", json={"model": MODEL, "prompt": long, "stream": True})
    assert r.status_code == 400 and error_of(r)["code"] == "context_length_exceeded"


def test_unknown_route_is_404_in_openai_shape(http):
    r = http.get("/v1/nothing")
    assert r.status_code == 404 and error_of(r)["type"] == "not_found_error"
