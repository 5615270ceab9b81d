"""``lmforge serve api_client`` as a user meets it: typed on a terminal, piped, with no server,
with a server that dies, and with a conversation that outgrows the session length.

The fake engine echoes a message's last word first, so each reply says what the server got.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from server_process import fake_server_process, free_port, stop_server
from terminal_session import (
    CTRL_C,
    ENTER,
    LEFT,
    UP,
    finish,
    output,
    reply_starting,
    spawn_lmforge,
)

CLIENT = [sys.executable, "-m", "lmforge.cli.main", "serve", "api_client"]
LONG = " ".join(f"w{i}" for i in range(40))  # 40 tokens of the fake engine's 64


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    yield from fake_server_process(tmp_path_factory.mktemp("slow_client"), "--delay", "0.3")


def test_prompt_edits_recalls_and_reads_pasted_lines_as_one_message(fake_server):
    child = spawn_lmforge("serve", "api_client", fake_server.url, "--session-id", "31", timeout=30)
    child.expect("user>")
    child.send("hello wrld" + LEFT * 3 + "o" + ENTER)  # fix the typo with the arrow keys
    child.expect(reply_starting("world"))
    child.expect("user>")
    child.send(UP + ENTER)  # the previous message again, from the history
    child.expect(reply_starting("world"))
    child.expect("user>")
    child.send("first line\nsecond words\n")  # a paste: both lines arrive at once
    child.expect(reply_starting("words"))
    child.expect("user>")
    child.send('"""\rline one\rline two\r"""\r')
    child.expect(reply_starting("two"))
    child.expect("user>")
    child.sendline("exit")
    assert finish(child) == 0
    assert output(child).count("assistant>") == 4  # the pasted lines were one message


def test_ctrl_c_stops_only_the_reply_and_ctrl_d_leaves_a_clean_line(slow_server):
    child = spawn_lmforge("serve", "api_client", slow_server.url, timeout=30)
    child.expect("user>")
    child.sendline("tell me slowly")
    child.expect(reply_starting("slowly"))
    child.send(CTRL_C)
    child.expect(r"\(stopped\)")
    child.expect("user>")
    child.sendline("and now quickly")  # the chat goes on: the server gets the conversation again
    child.expect(reply_starting("quickly"), timeout=30)
    child.expect("user>", timeout=30)
    child.sendeof()
    assert finish(child) == 0
    assert output(child).endswith("user> \r\n")  # the shell prompt starts on its own line


def test_overflow_offers_to_cancel_drop_the_oldest_turns_or_reset(fake_server):
    child = spawn_lmforge("serve", "api_client", fake_server.url, "--session-id", "32", timeout=30)
    child.expect("user>")
    child.sendline(LONG + " first")
    child.expect(reply_starting("first"))
    child.expect("user>")
    child.sendline(LONG + " second")  # 48 tokens of history + 41 do not fit 64
    child.expect("no longer fits")
    child.expect(r"\[c\]ancel this message\? \[d\]")
    child.sendline("c")
    child.expect("user>")
    child.sendline(LONG + " third")
    child.expect(r"\[d\]")
    child.sendline("")  # Enter: the default, drop
    child.expect(reply_starting("third"))
    child.expect("Dropped the 1 oldest turn.")
    child.expect("user>")
    child.sendline(LONG + " fourth")
    child.expect(r"\[d\]")
    child.sendline("r")
    child.expect("New conversation.")
    child.expect(reply_starting("fourth"))
    child.expect("user>")
    child.sendline("quit")
    assert finish(child) == 0
    assert "Traceback" not in output(child)


def test_piped_overflow_drops_the_oldest_turns(fake_server):
    lines = "".join(f"{LONG} n{i}\n" for i in range(3))
    run = subprocess.run([*CLIENT, fake_server.url, "--session-id", "33"], input=lines,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert [line.split()[0] for line in run.stdout.splitlines()] == ["n0", "n1", "n2"]
    assert run.stderr.count("Dropped the 1 oldest turn.") == 2


def test_reset_and_quit_words_are_lmforge_chats(fake_server):
    run = subprocess.run([*CLIENT, fake_server.url], input="one\n/reset\ntwo\nend\n/quit\nno\n",
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert [line.split()[0] for line in run.stdout.splitlines()] == ["one", "two"]
    assert run.stderr.count("New conversation.") == 2


def test_no_server_is_one_sentence():
    url = f"http://127.0.0.1:{free_port()}"
    run = subprocess.run([*CLIENT, url], input="hello\n", capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip() == (
        f"Error: Cannot reach the api_server at {url} (Connection refused); is it running? "
        "Start one with `lmforge serve api_server`, or check the URL."
    )


def test_server_that_dies_mid_chat_is_one_sentence(tmp_path):
    server = next(fake_server_process(tmp_path))
    client = subprocess.Popen([*CLIENT, server.url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client.stdin.write("hello there\n")
        client.stdin.flush()
        assert client.stdout.readline().split()[0] == "there"
        stop_server(server)
        client.stdin.write("are you there\n")
        client.stdin.close()
        assert client.wait(timeout=30) == 1
        err = client.stderr.read()
    finally:
        client.kill()
    assert "Traceback" not in err
    assert err.strip().startswith(f"Error: Cannot reach the api_server at {server.url}")


def test_missing_api_key_says_how_to_pass_one(tmp_path):
    server = next(fake_server_process(tmp_path, "--api-keys", "k1"))
    try:
        run = subprocess.run([*CLIENT, server.url], input="hi\n", capture_output=True,
                             text=True, timeout=60)
        keyed = subprocess.run([*CLIENT, server.url, "--api-key", "k1"], input="hi there\n",
                               capture_output=True, text=True, timeout=60)
    finally:
        stop_server(server)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert "send the header 'Authorization: Bearer <key>'" in run.stderr
    assert "--api-key <key>" in run.stderr
    assert keyed.returncode == 0 and keyed.stdout.split()[0] == "there"


def test_slow_start_is_not_mistaken_for_a_dead_server(slow_server):
    # A reply that takes seconds (0.3 s per token here) is waited for, not reported as an error.
    start = time.monotonic()
    run = subprocess.run([*CLIENT, slow_server.url], input="patience\n", capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.split()[0] == "patience"
    assert time.monotonic() - start > 2.0
