"""The terminal chat loop behind ``lmforge chat``: streaming replies, session memory, reset, quit.

Interactive on a terminal; from piped standard input each line is one user turn and only the
replies are printed, so ``echo "hi" | lmforge chat`` works in scripts.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from rich.console import Console

QUIT_WORDS = {"exit", "quit", "/exit", "/quit"}
RESET_WORDS = {"reset", "end", "/reset"}

HELP = (
    "Type a message and press Enter. 'reset' starts a new conversation; "
    "'exit' or Ctrl-D quits."
)


def _read_turns(interactive: bool, console: Console) -> Iterable[str]:
    while True:
        try:
            line = console.input("[bold green]user>[/] ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            return
        if not interactive and line == "":
            return
        line = line.rstrip("\n")
        if line.strip():
            yield line.strip()


def run_chat(pipe, gen_config, interactive: bool | None = None) -> None:
    """Chat with ``pipe`` until the user quits or standard input ends."""
    interactive = sys.stdin.isatty() if interactive is None else interactive
    err = Console(stderr=True)
    console = Console()
    if interactive:
        err.print(f"[dim]{HELP}[/]")
    session = pipe.new_session()
    for text in _read_turns(interactive, console):
        if text.lower() in QUIT_WORDS:
            break
        if text.lower() in RESET_WORDS:
            pipe.end_session(session)
            session = pipe.new_session()
            err.print("[dim]New conversation.[/]")
            continue
        if interactive:
            console.print("[bold blue]assistant>[/] ", end="")
        stream = pipe.chat(text, session=session, gen_config=gen_config, stream_response=True)
        finish = None
        try:
            for resp in stream:
                sys.stdout.write(resp.text)
                sys.stdout.flush()
                finish = resp.finish_reason or finish
        except KeyboardInterrupt:  # stop this reply, keep the chat
            stream.close()
            finish = "abort"
        sys.stdout.write("\n")
        sys.stdout.flush()
        if finish == "length" and interactive:
            err.print("[dim](the reply hit the token limit)[/]")
    pipe.end_session(session)
