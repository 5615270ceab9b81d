"""``lmforge serve api_client``: chat with a running server from the terminal.

The conversation lives on the server (``/v1/chat/interactive`` with ``interactive_mode``), so each
turn sends only the new message. On a terminal it prompts; from piped standard input each line
is one user turn and only the replies are printed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from rich.console import Console

from .api import APIClient

QUIT_WORDS = {"exit", "quit"}
RESET_WORDS = {"end", "reset"}
HELP = "Type a message and press Enter. 'end' starts a new conversation; 'exit' or Ctrl-D quits."


def _turns(interactive: bool, console: Console) -> Iterator[str]:
    while True:
        try:
            line = console.input("[bold green]user>[/] ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            return
        if not interactive and line == "":
            return
        if line.strip():
            yield line.strip()


def run_api_client(
    api_server_url: str,
    api_key: str | None = None,
    session_id: int = 1,
    interactive: bool | None = None,
) -> None:
    """Chat with the server at ``api_server_url`` until the user quits or input ends."""
    interactive = sys.stdin.isatty() if interactive is None else interactive
    console, err = Console(), Console(stderr=True)
    with APIClient(api_server_url, api_key=api_key) as api:
        if interactive:
            err.print(f"[dim]{HELP}[/]")
        for text in _turns(interactive, console):
            if text.lower() in QUIT_WORDS:
                break
            if text.lower() in RESET_WORDS:
                list(api.chat_interactive_v1("", session_id=session_id, interactive_mode=False))
                err.print("[dim]New conversation.[/]")
                continue
            if interactive:
                console.print("[bold blue]assistant>[/] ", end="")
            for chunk in api.chat_interactive_v1(
                text, session_id=session_id, interactive_mode=True, stream=True
            ):
                sys.stdout.write(chunk["text"])
                sys.stdout.flush()
                if chunk.get("finish_reason") == "length" and interactive:
                    err.print("\n[dim](the session is full: type 'end' to start a new one)[/]")
            sys.stdout.write("\n")
            sys.stdout.flush()
        list(api.chat_interactive_v1("", session_id=session_id, interactive_mode=False))
