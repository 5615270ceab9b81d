"""What ``lmforge chat`` and ``lmforge serve api_client`` share: the words, the prompt, the
conversation record.

On a terminal the prompt has line editing and history (GNU readline where Python has it);
lines pasted together, or written between two lines of three double quotes, are one message;
Ctrl-D leaves the shell prompt on its own line. From a pipe each line is one message.
"""

from __future__ import annotations

import select
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

QUIT_WORDS = frozenset({"exit", "quit", "/exit", "/quit", "/bye"})
RESET_WORDS = frozenset({"reset", "end", "/reset", "/clear"})
BLOCK_MARK = '"""'
HELP = (
    "Type a message and press Enter. 'reset' starts a new conversation; 'exit' or Ctrl-D "
    "quits; Ctrl-C stops a reply. Lines pasted together are one message; so are the lines "
    f"between two lines of {BLOCK_MARK}."
)
OVERFLOW_QUESTION = (
    "[d]rop the oldest turns and go on, [r]eset the conversation, or [c]ancel this message? [d]"
)
# Lines that arrive within this many seconds of the previous one were pasted with it.
PASTE_GAP = 0.03

try:  # line editing and history for input(); absent on some platforms
    import readline
except ImportError:  # pragma: no cover - Windows without pyreadline
    readline = None


def _colored(text: str, code: str) -> str:
    # \001 and \002 tell readline the escape codes take no room, so editing stays aligned.
    return f"\001\033[{code}m\002{text}\001\033[0m\002"


@dataclass
class Transcript:
    """The conversation so far, to rebuild it when the engine no longer holds it."""

    turns: list[tuple[str, str]] = field(default_factory=list)

    def add(self, user: str, assistant: str) -> None:
        self.turns.append((user, assistant))

    def messages(self, text: str) -> list[dict[str, str]]:
        """OpenAI-style messages: every recorded turn, then ``text`` as the new user message."""
        messages = []
        for user, assistant in self.turns:
            messages += [{"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]
        return [*messages, {"role": "user", "content": text}]

    def drop_oldest(self) -> bool:
        """Forget the oldest turn; False when there was none."""
        if not self.turns:
            return False
        del self.turns[0]
        return True

    def clear(self) -> None:
        self.turns.clear()


class TurnReader:
    """The user's messages, one per iteration, until they quit or the input ends."""

    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        self.prompt = _colored("user>", "1;32") + " " if interactive else ""

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                text = self._read_message()
            except (EOFError, KeyboardInterrupt):
                if self.interactive:
                    sys.stdout.write("\n")  # the shell prompt then starts on its own line
                    sys.stdout.flush()
                return
            if text is None:
                return
            if text.strip():
                yield text.strip()

    def ask(self, question: str, choices: str, default: str) -> str:
        """One letter of ``choices`` typed in answer (``default`` for Enter, and from a pipe)."""
        if not self.interactive:
            return default
        while True:
            try:
                answer = input(f"{question} ").strip().lower()[:1] or default
            except (EOFError, KeyboardInterrupt):
                sys.stdout.write("\n")
                return default
            self._forget_last_history_entry()
            if answer in choices:
                return answer

    # ------------------------------------------------------------------ reading

    def _read_message(self) -> str | None:
        if not self.interactive:
            line = sys.stdin.readline()
            return None if line == "" else line.rstrip("\n")
        lines = [input(self.prompt)]
        if lines[0].strip() == BLOCK_MARK:
            lines.append(input(_colored("...", "2") + " "))
            while lines[-1].strip() != BLOCK_MARK:
                lines.append(input(_colored("...", "2") + " "))
            text = "\n".join(lines[1:-1])
        else:
            while _more_input_waiting():
                lines.append(input(""))
            text = "\n".join(lines)
        if len(lines) > 1:
            _one_history_entry(lines, text)
        return text

    @staticmethod
    def _forget_last_history_entry() -> None:
        if readline is not None and readline.get_current_history_length():
            readline.remove_history_item(readline.get_current_history_length() - 1)


def _one_history_entry(lines: list[str], text: str) -> None:
    """Replace the history entries of a multi-line message's lines by the whole message."""
    if readline is None:
        return
    for _ in range(min(sum(1 for line in lines if line), readline.get_current_history_length())):
        readline.remove_history_item(readline.get_current_history_length() - 1)
    readline.add_history(text)


def _more_input_waiting() -> bool:
    try:
        ready, _, _ = select.select([sys.stdin], [], [], PASTE_GAP)
    except (OSError, ValueError):  # not a real file (tests that swap stdin)
        return False
    return bool(ready)
