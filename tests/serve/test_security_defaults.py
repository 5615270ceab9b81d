"""What the server exposes by default and how the flags lock it down or open it up."""

from __future__ import annotations

import httpx
import pytest
from server_process import fake_server_process

PROTECTED = ("/metrics", "/openapi.json", "/docs")
PREFLIGHT = {"Access-Control-Request-Method": "POST"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    yield from fake_server_process(tmp_path_factory.mktemp("keyed_docs"), "--api-keys", "k1")


def test_with_keys_metrics_and_docs_need_a_key(keyed):
    for path in PROTECTED:
        assert httpx.get(keyed.url + path).status_code == 401, path
        ok = httpx.get(keyed.url + path, headers={"Authorization": "Bearer k1"})
        assert ok.status_code == 200, path
    assert httpx.get(keyed.url + "/health").status_code == 200
    assert httpx.get(keyed.url + "/").status_code == 200  # the chat page asks for the key itself


def test_flags_open_metrics_and_docs(tmp_path_factory):
    args = ("--api-keys", "k1", "--public-metrics", "--public-docs")
    for server in fake_server_process(tmp_path_factory.mktemp("public"), *args):
        for path in PROTECTED:
            assert httpx.get(server.url + path).status_code == 200, path
        assert httpx.get(server.url + "/v1/models").status_code == 401


def test_cors_is_off_by_default(fake_server):
    headers = {"Origin": "http://evil.example", **PREFLIGHT}
    r = httpx.options(f"{fake_server.url}/v1/chat/completions", headers=headers)
    assert "access-control-allow-origin" not in r.headers
    r = httpx.get(f"{fake_server.url}/v1/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_allow_origins_allows_only_those(tmp_path_factory):
    args = ("--allow-origins", "http://app.example")
    for server in fake_server_process(tmp_path_factory.mktemp("cors"), *args):
        url = f"{server.url}/v1/chat/completions"
        good = httpx.options(url, headers={"Origin": "http://app.example", **PREFLIGHT})
        assert good.headers["access-control-allow-origin"] == "http://app.example"
        bad = httpx.options(url, headers={"Origin": "http://evil.example", **PREFLIGHT})
        assert "access-control-allow-origin" not in bad.headers


@pytest.mark.parametrize("keys", [(), ("--api-keys", "k1")])
def test_warning_when_listening_beyond_loopback_without_keys(tmp_path_factory, keys):
    for server in fake_server_process(tmp_path_factory.mktemp("exposed"), "--host", "0.0.0.0", *keys):
        warned = "without --api-keys" in server.output()
        assert warned == (not keys), server.output()


def test_no_warning_on_loopback(fake_server):
    assert "without --api-keys" not in fake_server.output()
