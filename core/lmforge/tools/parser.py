"""Finding tool calls in a reply, whole or as it streams.

A reply is content, then (from the format's ``call_start``) calls: JSON objects with a ``name``
and ``arguments`` (or ``parameters``), with markers and separators between them that are
skipped. The same :class:`ToolCallParser` serves both cases, so a streamed reply adds up to the
whole one: content goes out as it comes, except text that may be the start of a call marker;
a call goes out once its name is complete, then its arguments, verbatim, as they grow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .formats import ToolFormat
from .spec import ToolCall

ARGUMENT_KEYS = ("arguments", "parameters")
_WHITESPACE = " \t\n\r"


def _skip_string(text: str, i: int) -> int | None:
    """Index after the JSON string that opens at ``text[i]``, or None when it is cut off."""
    i += 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
        elif text[i] == '"':
            return i + 1
        else:
            i += 1
    return None


def _skip_value(text: str, i: int) -> int | None:
    """Index after the JSON value at ``text[i]``, or None when it is cut off."""
    if text[i] == '"':
        return _skip_string(text, i)
    if text[i] in "{[":
        depth = 0
        while i < len(text):
            c = text[i]
            if c == '"':
                end = _skip_string(text, i)
                if end is None:
                    return None
                i = end
                continue
            if c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return None
    while i < len(text) and text[i] not in ",}]" + _WHITESPACE:
        i += 1
    return i if i < len(text) else None


@dataclass
class ObjectScan:
    """The top-level members of a JSON object read so far: key → (start, end) of its value
    (end None while the value is cut off); ``end`` is past the closing brace once it came."""

    members: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    end: int | None = None


def scan_object(text: str, start: int) -> ObjectScan:
    """Read the (possibly unfinished) JSON object that opens at ``text[start]``."""
    scan = ObjectScan()
    i = start + 1
    while True:
        while i < len(text) and text[i] in _WHITESPACE + ",":
            i += 1
        if i >= len(text):
            return scan
        if text[i] == "}":
            scan.end = i + 1
            return scan
        if text[i] != '"':  # not JSON: the object ends here
            scan.end = i
            return scan
        key_end = _skip_string(text, i)
        if key_end is None:
            return scan
        key = json.loads(text[i:key_end])
        i = key_end
        while i < len(text) and text[i] in _WHITESPACE + ":":
            i += 1
        if i >= len(text):
            return scan
        value_end = _skip_value(text, i)
        scan.members[key] = (i, value_end)
        if value_end is None:
            return scan
        i = value_end


@dataclass
class CallDelta:
    """A streamed piece of call ``index``: its id and name the first time, then arguments."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None


@dataclass
class _Call:
    start: int
    end: int | None = None  # past its closing brace, once it came
    call: ToolCall | None = None  # once the name is known
    announced: bool = False  # its id and name went out
    sent: int = 0  # characters of the arguments sent
    done: bool = False


class ToolCallParser:
    """Splits one reply into content and tool calls; feed it text as it arrives."""

    def __init__(self, fmt: ToolFormat) -> None:
        self.fmt = fmt
        self.text = ""
        self.content_sent = 0
        self.calls_start: int | None = None
        self._calls: list[_Call] = []
        self._plain = False  # the reply cannot hold calls any more

    @property
    def calls(self) -> list[ToolCall]:
        """The complete calls so far (a call cut off by the length limit is not one)."""
        return [c.call for c in self._calls if c.call is not None and c.end is not None]

    def feed(self, delta: str) -> tuple[str, list[CallDelta]]:
        """New content, and new pieces of calls, after ``delta``."""
        self.text += delta
        if self.calls_start is None and not self._plain:
            self._find_start()
        if self.calls_start is None:
            return self._content(self._safe_end()), []
        return self._content(self._content_end()), self._call_deltas()

    def finish(self) -> tuple[str, list[CallDelta]]:
        """What is left when the reply ends: held-back content, the rest of the calls."""
        if self.calls_start is not None:
            deltas = self._call_deltas(final=True)
            if any(c.call is not None for c in self._calls):
                return self._content(self._content_end()), deltas
            self.calls_start = None  # a marker with no call after it: all of it is content
        self._plain = True
        return self._content(len(self.text)), []

    def result(self) -> tuple[str | None, list[ToolCall]]:
        """The whole reply's content (None when it is only calls) and its complete calls."""
        self.finish()
        if self.calls_start is None:
            return self.text, []
        return self.text[: self._content_end()] or None, self.calls

    # -------------------------------------------------------------- content

    def _find_start(self) -> None:
        marker = self.fmt.call_start
        at = self.text.find(marker)
        if at >= 0:
            self.calls_start = at
        elif self.fmt.bare_json_call:
            # A reply that opens with "{" is a call too (Llama 3 writes them bare); one that
            # opens with anything else but the marker holds none.
            head = self.text.lstrip()
            if head.startswith("{"):
                self.calls_start = len(self.text) - len(head)
            elif head and not marker.startswith(head[: len(marker)]):
                self._plain = True

    def _safe_end(self) -> int:
        """The end of the content that cannot belong to a call: a partial marker and the
        whitespace before it wait for what follows."""
        text = self.text
        if self._plain:
            return len(text)
        marker = self.fmt.call_start
        cut = len(text)
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if marker.startswith(text[-size:]):
                cut = len(text) - size
                break
        return len(text[:cut].rstrip(_WHITESPACE))

    def _content_end(self) -> int:
        return len(self.text[: self.calls_start].rstrip(_WHITESPACE))

    def _content(self, end: int) -> str:
        end = max(end, self.content_sent)
        piece, self.content_sent = self.text[self.content_sent: end], end
        return piece

    # -------------------------------------------------------------- calls

    def _call_deltas(self, final: bool = False) -> list[CallDelta]:
        self._find_objects()
        deltas = []
        for index, call in enumerate(self._calls):
            delta = self._advance(call, index, final)
            if delta is not None:
                deltas.append(delta)
        return deltas

    def _find_objects(self) -> None:
        """Note each object that opens after the calls' start, one after the other."""
        if self._calls:
            last = self._calls[-1]
            if last.end is None:
                last.end = scan_object(self.text, last.start).end
                if last.end is None:
                    return
            pos = last.end
        else:
            pos = self.calls_start
        while (at := self.text.find("{", pos)) >= 0:
            call = _Call(at, scan_object(self.text, at).end)
            self._calls.append(call)
            if call.end is None:
                return
            pos = call.end

    def _advance(self, state: _Call, index: int, final: bool) -> CallDelta | None:
        """The new part of one call: its name once complete, then its arguments as they grow."""
        if state.done:
            return None
        scan = scan_object(self.text, state.start)
        state.end = scan.end
        closed = scan.end is not None or final
        if state.call is None:
            name = scan.members.get("name")
            if name is None or name[1] is None:
                state.done = closed  # an object without a name is no call
                return None
            state.call = ToolCall(str(json.loads(self.text[name[0]: name[1]])), "")
        delta = CallDelta(index, "")
        if not state.announced:
            delta.id, delta.name, state.announced = state.call.id, state.call.name, True
        key = next((k for k in ARGUMENT_KEYS if k in scan.members), None)
        if key is not None:
            start, end = scan.members[key]
            arguments = self.text[start: len(self.text) if end is None else end]
            if end is None and not closed:  # whitespace at the cut may not be the value's
                arguments = arguments.rstrip(_WHITESPACE)
            delta.arguments, state.sent = arguments[state.sent:], len(arguments)
            state.call.arguments = arguments
        if closed:
            state.done = True
            if not state.call.arguments:  # a call without arguments takes none
                state.call.arguments = delta.arguments = "{}"
        return delta if (delta.name or delta.arguments) else None
