"""The terminal chat loop behind ``lmforge chat``: streaming replies, session memory, reset, quit.

The conversation's history stays in the engine's KV cache between turns. When it no longer fits
the session length, the user chooses: drop the oldest turns (the rest is sent again as one
prompt), start a new conversation, or cancel the message; the chat goes on either way. A reply
stopped with Ctrl-C stays in the conversation. From piped standard input each line is one turn,
only the replies are printed, and an overflow drops the oldest turns.
"""

from __future__ import annotations

import sys

from rich.console import Console

from ..errors import LmforgeError, PromptTooLongError
from .console import print_error
from .repl import HELP, OVERFLOW_QUESTION, QUIT_WORDS, RESET_WORDS, Transcript, TurnReader


class TerminalChat:
    """One conversation with a pipeline, as the terminal chat runs it."""

    def __init__(self, pipe, gen_config, reader: TurnReader, err: Console) -> None:
        self.pipe, self.gen_config, self.reader, self.err = pipe, gen_config, reader, err
        self.transcript = Transcript()
        self.session = pipe.new_session()

    @property
    def session_len(self) -> int:
        return self.pipe.engine.session_len

    def reset(self) -> None:
        self.pipe.end_session(self.session)
        self.session = self.pipe.new_session()
        self.transcript.clear()

    def turn(self, text: str) -> None:
        """Answer one message, handling a conversation that outgrew the session length."""
        prompt: str | list[dict] = text
        if self.transcript.turns and not self.pipe.engine.has_session(self.session.session_id):
            prompt = self._restart(text)  # the engine let it go (a stopped reply): send it again
        try:
            self._reply(text, prompt)
        except PromptTooLongError:
            self._overflow(text)

    def _restart(self, text: str) -> list[dict]:
        self.pipe.end_session(self.session)
        self.session = self.pipe.new_session()
        return self.transcript.messages(text)

    def _overflow(self, text: str) -> None:
        alone = self.pipe.engine.encode_prompt(text)
        if len(alone) >= self.session_len - 1:
            self.note(f"This message has {len(alone)} tokens; the session holds "
                      f"{self.session_len}. Shorten it, or restart with a larger --session-len.")
            return
        self.note(f"The conversation no longer fits the session length ({self.session_len} "
                  "tokens).")
        choice = self.reader.ask(OVERFLOW_QUESTION, "drc", "d")
        if choice == "c":
            return
        if choice == "r":
            self.reset()
            self.note("New conversation.")
            self._reply(text, text)
            return
        dropped = self._drop_until_fits(text)
        self.note(f"Dropped the {dropped} oldest turn{'s' if dropped != 1 else ''}.")
        self._reply(text, self._restart(text))

    def _drop_until_fits(self, text: str) -> int:
        """Forget the oldest turns until the rest and ``text`` leave room for a reply."""
        room = self.session_len - min(self.gen_config.max_new_tokens, self.session_len // 4)
        dropped = 0
        while (len(self.pipe.engine.encode_prompt(self.transcript.messages(text))) > room
               and self.transcript.drop_oldest()):
            dropped += 1
        return dropped

    def _reply(self, text: str, prompt: str | list[dict]) -> None:
        stream = self.pipe.chat(prompt, session=self.session, gen_config=self.gen_config,
                                stream_response=True)
        reply, last = "", None
        try:
            for resp in stream:  # a prompt that does not fit fails before the first reply
                if last is None and self.reader.interactive:
                    sys.stdout.write("\033[1;34massistant>\033[0m ")
                sys.stdout.write(resp.text)
                sys.stdout.flush()
                reply += resp.text
                last = resp
        except KeyboardInterrupt:  # stop this reply, keep the chat
            stream.close()
            sys.stdout.write("\n" if last is not None else "")
            last = None
            self.note("(stopped)")
        finally:
            if last is not None:
                sys.stdout.write("\n")
            sys.stdout.flush()
        self.transcript.add(text, reply)
        if last is not None and last.finish_reason == "length" and self.reader.interactive:
            used = last.input_token_len + last.generate_token_len
            why = ("the conversation reached the session length" if used >= self.session_len - 1
                   else "the reply reached --max-new-tokens")
            self.note(f"({why})")

    def note(self, text: str) -> None:
        self.err.print(text, style="dim", markup=False, highlight=False, soft_wrap=True)


def run_chat(pipe, gen_config, interactive: bool | None = None) -> None:
    """Chat with ``pipe`` until the user quits or standard input ends."""
    interactive = sys.stdin.isatty() if interactive is None else interactive
    err = Console(stderr=True)
    reader = TurnReader(interactive)
    chat = TerminalChat(pipe, gen_config, reader, err)
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
        except LmforgeError as exc:  # this message failed; the chat goes on
            print_error(str(exc))
    pipe.end_session(chat.session)
