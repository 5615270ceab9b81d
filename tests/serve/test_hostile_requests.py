"""Requests a careless or hostile client sends, against the fake engine: each is a 4xx that names
what is wrong (or a documented clamp), never a 500, a stalled server or a hurt neighbour."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fake_engine import WORDS
from server_process import fake_server_process

MODEL = "fake-model"


def chat(content: str = "hi", **fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


@pytest.fixture(scope="module")
def http(fake_server):
    with httpx.Client(base_url=fake_server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def small_body_server(tmp_path_factory):
    yield from fake_server_process(tmp_path_factory.mktemp("small_body"), "--max-body-mb", "0.5")


# --- token ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt,where",
    [([1000000000], "prompt[0]"), ([1, -1, 2], "prompt[1]"), ([[1, 2], [3, 100_000]], "prompt[1][1]")],
)
def test_token_ids_outside_the_vocabulary_are_400(http, prompt, where):
    r = http.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 1})
    assert r.status_code == 400
    err = error_of(r)
    assert err["param"] == "prompt" and where in err["message"] and "100000" in err["message"]


# --- body size and prompt counts -----------------------------------------------------------------


def test_body_over_the_limit_is_413_with_or_without_a_length(small_body_server):
    url = f"{small_body_server.url}/v1/chat/completions"
    big = json.dumps(chat("w " * 400_000)).encode()
    r = httpx.post(url, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    err = error_of(r)
    assert "--max-body-mb" in err["message"] and err["code"] == "request_too_large"

    def chunks():  # no Content-Length: the server counts what arrives
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    r = httpx.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    small = httpx.post(url, json=chat("hi", max_tokens=2, temperature=0))
    assert small.status_code == 200


def test_completions_prompt_count_is_bounded(http):
    r = http.post("/v1/completions", json={"model": MODEL, "prompt": ["a"] * 300, "max_tokens": 1})
    assert r.status_code == 400 and error_of(r)["param"] == "prompt"
    r = http.post(
        "/v1/completions", json={"model": MODEL, "prompt": ["a"] * 40, "n": 8, "max_tokens": 1}
    )
    assert r.status_code == 400 and error_of(r)["param"] == "n"


def test_many_prompts_start_together(http):
    # 256 prompts whose first token takes 5 ms: started one after another, 1.3 s.
    start = time.monotonic()
    body = {"model": MODEL, "prompt": ["a b"] * 256, "max_tokens": 2}
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 200 and len(r.json()["choices"]) == 256
    assert time.monotonic() - start < 0.8


# --- bounds --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value",
    [
        ("max_tokens", 1e30),
        ("max_tokens", 10**30),
        ("max_tokens", 65),  # above the session length (64)
        ("max_completion_tokens", 10**6),
        ("top_k", 1e30),
        ("seed", 2**70),
        ("seed", -(2**64)),
        ("repetition_penalty", float("inf")),
        ("temperature", float("nan")),
        ("stream", "yes"),
        ("logprobs", "true"),
        ("n", 2.5),
        ("stop", ["x"] * 100),
    ],
)
def test_values_out_of_bounds_are_400_naming_the_field(http, field, value):
    body = json.dumps(chat("hi", **{field: value}))  # Infinity and NaN as Python writes them
    r = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["param"] == field and field in err["message"]


def test_each_token_limit_is_checked_when_both_are_given(http):
    # max_completion_tokens wins, but an out-of-bounds max_tokens beside it is still refused
    r = http.post("/v1/chat/completions",
                  json=chat("hi", max_completion_tokens=2, max_tokens=10**6))
    assert r.status_code == 400 and error_of(r)["param"] == "max_tokens"
    r = http.post("/v1/chat/completions", json=chat("hi", max_completion_tokens=2, max_tokens=64))
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2


def test_min_tokens_above_max_tokens_is_400(http):
    r = http.post("/v1/chat/completions", json=chat("hi", min_tokens=10, max_tokens=5))
    assert r.status_code == 400 and error_of(r)["param"] == "min_tokens"


def test_interactive_bounds(http):
    url = "/v1/chat/interactive"
    for field, value in [("request_output_len", 10**9), ("interactive_mode", "no"), ("seed", 2**65)]:
        r = http.post(url, json={"prompt": "hi", field: value})
        assert r.status_code == 400 and error_of(r)["param"] == field, (field, r.text)


def test_huge_top_k_means_no_limit(http):
    r = http.post("/v1/chat/completions", json=chat("a b", top_k=10**30, max_tokens=3, seed=1))
    assert r.status_code == 200, r.text


# --- text that is not text -----------------------------------------------------------------------


def test_lone_surrogate_is_400(http):
    raw = b'{"model": "fake-model", "messages": [{"role": "user", "content": "a \\ud800 b"}]}'
    r = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert error_of(r)["param"] == "messages.0.content"
    raw = b'{"model": "fake-model", "prompt": "x \\udfff", "max_tokens": 1}'
    r = http.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400 and error_of(r)["param"] == "prompt"


# --- robustness ----------------------------------------------------------------------------------


def test_a_500_keeps_the_connection_alive(http):
    r = http.get("/plugin/boom")
    assert r.status_code == 500 and error_of(r)["type"] == "server_error"
    assert r.headers.get("connection", "").lower() != "close"
    assert http.get("/health").status_code == 200


def test_client_disconnects_log_no_traceback(tmp_path_factory):
    for server in fake_server_process(tmp_path_factory.mktemp("quiet"), "--delay", "0.05"):
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 50, "ignore_eos": True}
        for _ in range(3):
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{server.url}/v1/completions", json=body, timeout=0.2)
        time.sleep(0.5)
        assert httpx.get(f"{server.url}/health").status_code == 200
        log = server.output()
        assert "Traceback" not in log and "CancelledError" not in log, log


# --- the OpenAPI document ------------------------------------------------------------------------


def test_openapi_describes_the_server(http):
    spec = http.get("/openapi.json").json()
    chat_op = spec["paths"]["/v1/chat/completions"]["post"]
    assert {"200", "400", "401", "404", "413", "500"} <= set(chat_op["responses"])
    assert "422" not in chat_op["responses"]
    assert "text/event-stream" in chat_op["responses"]["200"]["content"]
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain"]
    request = spec["components"]["schemas"]["ChatCompletionRequest"]
    assert request["properties"]["model"]["enum"] == [MODEL]


def test_docs_work_offline(http):
    page = http.get("/docs").text
    assert "swagger" in page.lower()
    assert "https://" not in page and "http://" not in page
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        path = page.split(asset)[0].rsplit('"', 1)[1] + asset
        assert http.get(path).status_code == 200, path


def test_webui_sends_frame_and_content_policies(http):
    r = http.get("/")
    assert r.headers["x-frame-options"] == "DENY"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"


def test_good_requests_still_work(http):
    r = http.post("/v1/chat/completions", json=chat("a b", max_tokens=3, temperature=0))
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == f" b {WORDS[0]} {WORDS[1]}"
