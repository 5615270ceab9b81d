"""``lmforge serve api_client``: chat with a running server from the terminal.

The conversation lives on the server (``/v1/chat/interactive`` with ``interactive_mode``), so each
turn sends only the new message. The client keeps a transcript too: when the server no longer
holds the conversation (a reply stopped with Ctrl-C ends it there) the transcript is sent again
as messages, and when it outgrows the session length the user chooses, as in ``lmforge chat``,
to drop the oldest turns, reset, or cancel the message. The prompt, the words for reset and quit
and the handling of pasted lines are ``lmforge chat``'s.
"""

from __future__ import annotations

import sys

from rich.console import Console

from ..cli.console import print_error
from ..cli.repl import (
    HELP,
    OVERFLOW_QUESTION,
    QUIT_WORDS,
    RESET_WORDS,
    Transcript,
    TurnReader,
)
from .api import APIClient, APIClientError

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


class RemoteChat:
    """One conversation with an api_server's interactive session."""

    def __init__(self, api: APIClient, session_id: int, reader: TurnReader, err: Console):
        self.api, self.session_id, self.reader, self.err = api, session_id, reader, err
        self.transcript = Transcript()
        self.held = False  # whether the server holds the conversation so far

    def end(self) -> None:
        """End the server's session (an empty turn that is not interactive ends it)."""
        list(self.api.chat_interactive_v1("", session_id=self.session_id, interactive_mode=False))
        self.held = False

    def reset(self) -> None:
        self.end()
        self.transcript.clear()

    def turn(self, text: str) -> None:
        prompt: str | list[dict] = text
        if self.transcript.turns and not self.held:
            self.end()
            prompt = self.transcript.messages(text)
        try:
            self._reply(text, prompt)
        except APIClientError as exc:
            if exc.code != CONTEXT_LENGTH_EXCEEDED:
                raise
            self._overflow(text, exc)

    def _overflow(self, text: str, exc: APIClientError) -> None:
        if not self.transcript.turns:
            self.note(f"{exc} (This message alone does not fit.)")
            return
        self.note("The conversation no longer fits the server's session length.")
        choice = self.reader.ask(OVERFLOW_QUESTION, "drc", "d")
        if choice == "c":
            return
        if choice == "r":
            self.reset()
            self.note("New conversation.")
            self._reply(text, text)
            return
        self.end()
        dropped = 0
        while self.transcript.drop_oldest():  # the server measures: try until the rest fits
            dropped += 1
            try:
                self._reply(text, self.transcript.messages(text))
                break
            except APIClientError as again:
                if again.code != CONTEXT_LENGTH_EXCEEDED:
                    raise
        else:
            self._reply(text, text)
        self.note(f"Dropped the {dropped} oldest turn{'s' if dropped != 1 else ''}.")

    def _reply(self, text: str, prompt: str | list[dict]) -> None:
        chunks = self.api.chat_interactive_v1(prompt, session_id=self.session_id,
                                              interactive_mode=True, stream=True)
        reply, finish, started = "", None, False
        try:
            for chunk in chunks:  # an error (too long, say) comes before any text
                if not started and self.reader.interactive:
                    sys.stdout.write("\033[1;34massistant>\033[0m ")
                started = True
                sys.stdout.write(chunk["text"])
                sys.stdout.flush()
                reply += chunk["text"]
                finish = chunk.get("finish_reason") or finish
        except KeyboardInterrupt:  # closing the stream ends the turn on the server
            chunks.close()
            finish = "abort"
            if started:
                sys.stdout.write("\n")
                started = False
            self.note("(stopped)")
        finally:
            if started:
                sys.stdout.write("\n")
                sys.stdout.flush()
        self.transcript.add(text, reply)
        self.held = finish in ("stop", "length")
        if finish == "length" and self.reader.interactive:
            self.note("(the reply reached the token limit)")

    def note(self, text: str) -> None:
        self.err.print(text, style="dim", markup=False, highlight=False, soft_wrap=True)


def run_api_client(
    api_server_url: str,
    api_key: str | None = None,
    session_id: int = 1,
    interactive: bool | None = None,
) -> None:
    """Chat with the server at ``api_server_url`` until the user quits or input ends.

    An unreachable server, or one that stops answering, raises
    :class:`~lmforge.serve.api.ServerUnreachableError` with one sentence naming the URL.
    """
    interactive = sys.stdin.isatty() if interactive is None else interactive
    err = Console(stderr=True)
    reader = TurnReader(interactive)
    with APIClient(api_server_url, api_key=api_key) as api:
        chat = RemoteChat(api, session_id, reader, err)
        chat.end()  # a conversation left on the server under this id (a client killed) ends
        if interactive:
            err.print(HELP, style="dim", markup=False, highlight=False)
        for text in reader:
            if text.lower() in QUIT_WORDS:
                break
            if text.lower() in RESET_WORDS:
                chat.reset()
                chat.note("New conversation.")
                continue
            try:
                chat.turn(text)
            except APIClientError as exc:  # this message failed; the chat goes on
                print_error(str(exc))
        chat.end()
