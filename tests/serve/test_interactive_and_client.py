"""``/v1/chat/interactive``, the :class:`APIClient` and ``lmforge serve api_client``."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import lmforge
import pytest
from fake_engine import WORDS
from lmforge.serve.api import APIClientError

MODEL = "fake-model"


@pytest.fixture(scope="module")
def api(fake_server):
    with lmforge.client(fake_server.url) as client:
        yield client


def turn(api, prompt, session_id, interactive=True, **kw):
    (reply,) = api.chat_interactive_v1(
        prompt, session_id=session_id, interactive_mode=interactive, **kw
    )
    return reply


def test_interactive_session_keeps_history_on_the_server(api):
    first = turn(api, "hello there", 11, request_output_len=3, top_k=1)
    assert first["text"] == f" there {WORDS[0]} {WORDS[1]}"
    assert (first["input_tokens"], first["tokens"], first["history_tokens"]) == (2, 3, 0)
    second = turn(api, "again", 11, request_output_len=2, top_k=1)
    # The engine saw the whole conversation although only the new message was sent.
    assert second["history_tokens"] == 5 and second["input_tokens"] == 6
    assert second["text"].split()[0] == "again"
    ended = turn(api, "fresh start", 11, interactive=False, request_output_len=1)
    assert ended["history_tokens"] == 0 and ended["input_tokens"] == 2
    again = turn(api, "new", 11, request_output_len=1)
    assert again["history_tokens"] == 0 and again["input_tokens"] == 1


def test_interactive_stream_is_newline_delimited_json(api):
    chunks = list(
        api.chat_interactive_v1(
            "stream me", session_id=12, interactive_mode=True, stream=True, top_k=1
        )
    )
    assert "".join(c["text"] for c in chunks) == " me " + " ".join(WORDS[:7])
    assert chunks[-1]["finish_reason"] == "stop" and chunks[-1]["tokens"] == 8
    assert all(c["session_id"] == 12 for c in chunks)


def test_interactive_accepts_messages_and_assigns_session_ids(api):
    reply = turn(api, [{"role": "user", "content": "from messages"}], -1, request_output_len=1)
    assert reply["text"] == " messages" and 0 < reply["session_id"] < 2**53


def test_interactive_cancel_stops_a_running_turn(fake_server):
    results = {}

    def long_turn():
        with lmforge.client(fake_server.url) as c:
            results["reply"] = turn(c, "long", 13, ignore_eos=True, request_output_len=50)

    worker = threading.Thread(target=long_turn)
    worker.start()
    time.sleep(0.1)
    busy = httpx.post(
        f"{fake_server.url}/v1/chat/interactive", json={"prompt": "x", "session_id": 13}
    )
    assert busy.status_code == 400 and "already generating" in busy.json()["error"]["message"]
    cancel = httpx.post(
        f"{fake_server.url}/v1/chat/interactive", json={"session_id": 13, "cancel": True}
    )
    assert cancel.json() == {"session_id": 13, "cancelled": True}
    worker.join(timeout=10)
    assert results["reply"]["finish_reason"] == "abort"
    assert results["reply"]["tokens"] < 50


def test_api_client_endpoints(api):
    assert api.available_models == [MODEL]
    (whole,) = api.chat_completions_v1(MODEL, "hi", temperature=0, max_tokens=2)
    assert whole["choices"][0]["message"]["content"] == f" hi {WORDS[0]}"
    chunks = list(api.completions_v1(MODEL, "a b", temperature=0, max_tokens=3, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == f" b {WORDS[0]} {WORDS[1]}"
    with pytest.raises(APIClientError) as err:
        list(api.chat_completions_v1("other", "hi"))
    assert err.value.status == 404 and "fake-model" in str(err.value)
    with pytest.raises(APIClientError) as err:
        list(api.completions_v1(MODEL, "hi", temperature=-1, stream=True))
    assert err.value.status == 400 and "temperature" in str(err.value)


def test_terminal_client_from_piped_stdin(fake_server):
    cmd = [sys.executable, "-m", "lmforge.cli.main", "serve", "api_client", fake_server.url]
    cmd += ["--session-id", "21"]
    run = subprocess.run(
        cmd, input="hello there\nagain\nexit\n", capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["there", "again"]
