"""``/v1/chat/interactive`` sessions belong to the API key (or, without keys, the client address)
that opened them; their ids cannot be guessed, one turn runs at a time, and the history the
server reports is the history the engine holds."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from server_process import fake_server_process

URL = "/v1/chat/interactive"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    for server in fake_server_process(
        tmp_path_factory.mktemp("keyed_sessions"), "--api-keys", "alice", "bob", "--delay", "0.02"
    ):
        with (
            httpx.Client(base_url=server.url, headers={"Authorization": "Bearer alice"}) as alice,
            httpx.Client(base_url=server.url, headers={"Authorization": "Bearer bob"}) as bob,
        ):
            yield alice, bob


def turn(client: httpx.Client, prompt: str, session_id: int, **fields) -> dict:
    body = {"prompt": prompt, "session_id": session_id, "interactive_mode": True, "top_k": 1}
    r = client.post(URL, json={**body, "request_output_len": 2, **fields}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_another_key_cannot_see_or_cancel_a_session(keyed):
    alice, bob = keyed
    first = turn(alice, "one two three", -1)
    sid = first["session_id"]
    # bob's turn with alice's id opens a session of his own: alice's history is not his.
    other = turn(bob, "four", sid)
    assert other["history_tokens"] == 0 and other["input_tokens"] == 1
    second = turn(alice, "five", sid)
    assert second["history_tokens"] == first["input_tokens"] + first["tokens"]
    # bob cannot cancel alice's running turn.
    body = {"prompt": "x", "session_id": sid, "interactive_mode": True, "request_output_len": 20,
            "ignore_eos": True}  # fmt: skip
    with httpx.Client(base_url=str(alice.base_url), headers=dict(alice.headers)) as slow:
        with slow.stream("POST", URL, json={**body, "stream": True}, timeout=30) as r:
            lines = r.iter_lines()
            next(lines)
            cancel = bob.post(URL, json={"session_id": sid, "cancel": True})
            assert cancel.json()["cancelled"] is False
            last = [line for line in lines if line][-1]
    assert '"finish_reason":"length"' in last


def test_assigned_session_ids_are_unguessable(keyed):
    alice, _ = keyed
    ids = [turn(alice, "hi", -1)["session_id"] for _ in range(4)]
    assert len(set(ids)) == 4
    assert all(abs(a - b) > 1 << 20 for a, b in zip(ids, ids[1:], strict=False))
    assert all(0 < i < 2**53 for i in ids)  # exact in JavaScript numbers


def test_two_turns_at_once_on_one_session(keyed):
    alice, _ = keyed
    headers = dict(alice.headers)

    async def both():
        async with httpx.AsyncClient(base_url=str(alice.base_url), headers=headers) as client:
            body = {"prompt": "p", "session_id": 77, "interactive_mode": True,
                    "request_output_len": 4}  # fmt: skip
            return await asyncio.gather(*(client.post(URL, json=body, timeout=30) for _ in range(2)))

    codes = sorted(r.status_code for r in asyncio.run(both()))
    assert codes == [200, 400]


def test_chat_completions_leave_interactive_history_alone(keyed):
    alice, _ = keyed
    first = turn(alice, "alpha beta", 91)
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "x"}],
            "session_id": 91, "max_tokens": 1}  # fmt: skip
    assert alice.post("/v1/chat/completions", json=body).status_code == 200
    second = turn(alice, "gamma", 91)
    held = first["input_tokens"] + first["tokens"]
    assert second["history_tokens"] == held and second["input_tokens"] == held + 1


def test_without_keys_sessions_belong_to_the_client_address(tmp_path_factory):
    for server in fake_server_process(tmp_path_factory.mktemp("open_sessions")):
        here = httpx.Client(base_url=server.url)
        there = httpx.Client(
            base_url=server.url, transport=httpx.HTTPTransport(local_address="127.0.0.2")
        )
        with here, there:
            mine = turn(here, "one two", 5)
            theirs = turn(there, "three", 5)
            assert theirs["history_tokens"] == 0
            again = turn(here, "four", 5)
            assert again["history_tokens"] == mine["input_tokens"] + mine["tokens"]
