"""``lmforge chat`` as a user meets it: on a terminal, piped, with a conversation that outgrows
the session length and a reply stopped with Ctrl-C. The tiny random model keeps it fast; the
last tests load the demo model as ``lmforge chat`` does with no argument."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from terminal_session import CTRL_C, finish, output, spawn_lmforge

# A small KV pool: enough for these sessions, and quick to allocate.
SMALL = ["--cache-max-entry-count", "64", "--temperature", "0"]
LONG = " ".join(f"item{i}" for i in range(30))


def chat_args(model, *extra: str) -> list[str]:
    return ["chat", str(model), *SMALL, *extra]


def test_overflow_drops_the_oldest_turns_and_the_chat_goes_on(tiny_llama_dir):
    child = spawn_lmforge(*chat_args(tiny_llama_dir, "--session-len", "160",
                                     "--max-new-tokens", "8"))
    child.expect("user>")
    child.sendline(LONG)
    child.expect("assistant>")
    child.expect("user>")
    child.sendline(LONG)
    child.expect(r"no longer fits the session length \(160 tokens\)")
    child.expect(r"\[c\]ancel this message\? \[d\]")
    child.sendline("d")
    child.expect("Dropped the 1 oldest turn.")
    child.expect("assistant>")
    child.expect("user>")
    child.sendline(LONG)
    child.expect(r"\[d\]")
    child.sendline("r")
    child.expect("New conversation.")
    child.expect("assistant>")
    child.expect("user>")
    child.sendline("exit")
    assert finish(child) == 0
    assert "Traceback" not in output(child) and "Error" not in output(child)


def test_ctrl_c_stops_the_reply_not_the_chat(tiny_llama_dir):
    child = spawn_lmforge(*chat_args(tiny_llama_dir, "--max-new-tokens", "1500",
                                     "--session-len", "2048"))
    child.expect("user>")
    child.sendline("tell me a long story")
    child.expect("assistant>")
    time.sleep(0.5)
    child.send(CTRL_C)
    child.expect(r"\(stopped\)")
    child.expect("user>")
    child.sendline("and another one")  # the engine dropped the conversation: it is sent again
    child.expect("assistant>")
    child.send(CTRL_C)
    child.expect(r"\(stopped\)")
    child.expect("user>")
    child.sendeof()
    assert finish(child) == 0
    assert output(child).endswith("user> \r\n")  # the shell prompt starts on its own line


def test_piped_reset_and_quit_words(tiny_llama_dir):
    # Empty replies (--max-new-tokens 0): each answered message prints one empty line.
    run = subprocess.run(
        [sys.executable, "-m", "lmforge.cli.main", *chat_args(tiny_llama_dir,
                                                              "--max-new-tokens", "0")],
        input="hi\n/reset\nhello\nquit\nnot read\n", capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "\n\n"  # one reply per message before 'quit'
    assert run.stderr.count("New conversation.") == 1


def test_message_longer_than_the_session_is_one_sentence_and_the_chat_goes_on(tiny_llama_dir):
    run = subprocess.run(
        [sys.executable, "-m", "lmforge.cli.main", *chat_args(
            tiny_llama_dir, "--session-len", "48", "--max-new-tokens", "0")],
        input=f"{LONG}\nshort\n", capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "the session holds 48. Shorten it, or restart with a larger --session-len." in (
        " ".join(run.stderr.split()))
    assert run.stdout == "\n"  # the short message was answered


@pytest.mark.slow
def test_demo_shows_a_spinner_then_the_load_time(smollm2_gguf):
    child = spawn_lmforge("chat", *SMALL, "--max-new-tokens", "4", timeout=300)
    child.expect("Loading SmolLM2-135M-Instruct")
    child.expect(r"Loaded SmolLM2-135M-Instruct in \d+\.\d s")
    child.expect("user>")
    child.sendline("hi")
    child.expect("assistant>")
    child.expect("user>")
    child.sendeof()
    assert finish(child) == 0


@pytest.mark.slow
def test_demo_logs_load_time_and_memory_at_info(smollm2_gguf):
    run = subprocess.run(
        [sys.executable, "-m", "lmforge.cli.main", "--log-level", "info", "chat", *SMALL,
         "--max-new-tokens", "2"],
        input="hi\n", capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "blocks of 64" in run.stderr  # the K/V pool in tokens, blocks and GiB
    assert "loaded SmolLM2-135M-Instruct in" in run.stderr
    assert "resident (peak" in run.stderr
    assert "Loading" not in run.stderr  # no spinner when standard error is not a terminal
