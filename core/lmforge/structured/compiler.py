"""Grammars compiled into token matchers for one tokenizer, with llguidance.

Compiling happens in the front end (a worker thread for the server), never on the engine loop,
and is cached by grammar: each sequence then starts from a copy of the compiled matcher, which
costs about a microsecond. llguidance was chosen over xgrammar and outlines-core: one wheel with
no dependencies for every Python from 3.10 (abi3), JSON schemas, regular expressions and Lark
or GBNF grammars, and the lowest cost per step we measured on the demo model's vocabulary
(``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from ..errors import ConfigError
from .grammar import Grammar

# JSON is generated compact, with one space after separators as models write it: a grammar that
# allowed any whitespace would let a sampled reply wander through blank lines. A schema may
# change this with llguidance's "x-guidance" key.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError as exc:  # a platform with no llguidance wheel
        raise ConfigError(
            "Structured output needs the llguidance package; install it with "
            "`pip install llguidance`."
        ) from exc
    return llguidance


def short_error(message: str) -> str:
    """llguidance's error text without the grammar excerpt it appends, on one line."""
    lines = []
    for line in message.strip().splitlines():
        if re.match(r"\s*\d+ \|", line) or line.startswith("<state>"):
            break
        lines.append(line.strip())
    return " ".join(part for part in lines if part).rstrip(".")


class GrammarState:
    """Where one sequence is in its grammar; advanced by each token the sequence accepts."""

    __slots__ = ("matcher", "vocab_size")

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        self.matcher = matcher
        self.vocab_size = vocab_size  # tokens its bitmask row covers

    def accept(self, token_id: int) -> bool:
        """Advance by one token; False when the grammar does not allow it."""
        return self.matcher.consume_token(token_id)

    @property
    def done(self) -> bool:
        """The grammar is complete: nothing but an end of sequence may follow."""
        return self.matcher.is_stopped()

    @property
    def error(self) -> str | None:
        return short_error(self.matcher.get_error()) if self.matcher.is_error() else None


class CompiledGrammar:
    """A grammar ready to constrain sequences; shared by every request that asks for it."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        self._matcher = matcher  # never advanced: each sequence gets a copy
        self.vocab_size = vocab_size

    def new_state(self) -> GrammarState:
        return GrammarState(self._matcher.deep_copy(), self.vocab_size)


class GrammarCompiler:
    """Compiles :class:`Grammar` objects for one model's tokenizer; safe to call from any thread.

    :param tokenizer: the engine's :class:`~lmforge.tokenizer.Tokenizer` (a fast one).
    :param vocab_size: the width of the model's logits (may exceed the tokenizer's vocabulary).
    :param eos_token_ids: the ids that end a sequence; a grammar allows them once complete.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_ids: Iterable[int],
                 cache_size: int = 256) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.eos_token_ids = list(eos_token_ids)
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self._ll_tokenizer: Any = None
        self._unwritable: frozenset[int] = frozenset()  # bytes that no token contains
        self._cache: OrderedDict[Grammar, CompiledGrammar] = OrderedDict()

    def warm(self) -> None:
        """Build the token table now rather than at the first compile (it walks the whole
        vocabulary: about a second). A tokenizer it cannot read is reported by that compile."""
        try:
            self._tokenizer()
        except ConfigError:
            pass

    def _tokenizer(self) -> Any:
        with self._lock:
            if self._ll_tokenizer is None:
                ll_tokenizer = self._build_tokenizer()
                ordinary = [t for t in range(ll_tokenizer.vocab_size)
                            if not ll_tokenizer.is_special_token(t)]
                self._unwritable = frozenset(range(256)) - set(ll_tokenizer.decode_bytes(ordinary))
                self._ll_tokenizer = ll_tokenizer
            return self._ll_tokenizer

    def _build_tokenizer(self) -> Any:
        import llguidance.hf

        hf = self.tokenizer.hf
        if getattr(hf, "backend_tokenizer", None) is None:
            raise ConfigError(
                "Structured output needs a fast (Rust) tokenizer, and this model's tokenizer is "
                "a Python one; convert it to tokenizer.json."
            )
        n_vocab = max(self.vocab_size, len(hf))
        try:
            return llguidance.hf.from_tokenizer(hf, n_vocab=n_vocab, eos_token=self.eos_token_ids)
        except TypeError:
            # llguidance 1.6 (the newest wheel for glibc before 2.31) takes one end id: a
            # grammar then lets only the first end a reply.
            first = self.eos_token_ids[0]
            return llguidance.hf.from_tokenizer(hf, n_vocab=n_vocab, eos_token=first)

    def compile(self, grammar: Grammar) -> CompiledGrammar:
        """The compiled form of ``grammar``, from the cache when it was compiled before.

        Raises :class:`ConfigError` naming ``grammar.field`` when llguidance rejects it.
        """
        with self._lock:
            compiled = self._cache.get(grammar)
            if compiled is not None:
                self._cache.move_to_end(grammar)
                return compiled
        ll = _llguidance()
        tokenizer = self._tokenizer()
        self._check_writable(grammar)
        matcher = ll.LLMatcher(tokenizer, llguidance_text(grammar), log_level=0)
        if matcher.is_error():
            raise ConfigError(
                f"Invalid value for {grammar.field}: {short_error(matcher.get_error())}."
            )
        compiled = CompiledGrammar(matcher, tokenizer.vocab_size)
        with self._lock:
            self._cache[grammar] = compiled
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return compiled

    def _check_writable(self, grammar: Grammar) -> None:
        """Refuse a grammar whose literal text has a character no token can write (a byte that
        no token of the vocabulary contains, as some byte-level vocabularies drop bytes that
        rare characters need): generation could never match it. An alternative that avoids
        the character does not save it; the check reads the text, not the language."""
        if not self._unwritable:
            return
        for char in dict.fromkeys(_literal_text(grammar)):
            if not self._unwritable.isdisjoint(char.encode("utf-8", "surrogatepass")):
                raise ConfigError(
                    f"Invalid value for {grammar.field}: the model's vocabulary cannot write "
                    f"{char!r} (U+{ord(char):04X}); leave it out of the constraint."
                )


def _literal_text(grammar: Grammar) -> str:
    """The characters a grammar's text asks for: all of a regex's or a grammar's source; of a
    JSON schema, its property names and its const, enum and pattern strings."""
    if grammar.kind != "json_schema":
        return grammar.source
    parts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "properties" and isinstance(value, dict):
                    parts.extend(value)
                if key in ("const", "enum", "pattern"):
                    parts.extend(v for v in (value if isinstance(value, list) else [value])
                                 if isinstance(v, str))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(grammar.source))
    return "".join(parts)


def llguidance_text(grammar: Grammar) -> str:
    """``grammar`` in llguidance's own grammar format."""
    ll = _llguidance()
    if grammar.kind == "json_schema":
        return ll.LLMatcher.grammar_from_json_schema(grammar.source, defaults=JSON_OPTIONS)
    if grammar.kind == "regex":
        # \d means [0-9], as in other engines' regular expressions, not any Unicode digit.
        return ll.LLMatcher.grammar_from_regex(ll.regex_to_lark(grammar.source, "d"))
    from llguidance.gbnf_to_lark import any_to_lark

    try:
        lark = any_to_lark(grammar.source)
    except Exception as exc:  # the converter raises plain exceptions on bad GBNF
        raise ConfigError(f"Invalid value for {grammar.field}: {exc}.") from exc
    return ll.LLMatcher.grammar_from_lark(lark)
