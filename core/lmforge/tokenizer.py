"""The tokenizer of a model: a thin layer over a transformers fast tokenizer.

It loads from a Hugging Face folder or a GGUF file and adds what the engine needs beyond
encode/decode: the full set of EOS ids, BOS handling that never doubles the BOS token, and the
token ids that are exactly a given word (for stop and bad words).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from .errors import ModelLoadError

_UNBUILT = object()


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


class ByteTable:
    """The bytes each token id decodes to, and which ids are special tokens.

    Exact for tokenizers whose whole decoder is GPT-2's byte-level one: decoding ids is then
    concatenating their bytes and decoding UTF-8 with replacement characters, as the Rust
    decoder does. Added tokens contribute their content; it must be ASCII (the byte-level
    decoder maps other characters differently).
    """

    def __init__(self, pieces: list[bytes], special: set[int]) -> None:
        self.pieces = pieces
        self.special = special

    @classmethod
    def of(cls, tokenizer: Tokenizer) -> ByteTable | None:
        backend = tokenizer._backend
        if backend is None:
            return None
        from tokenizers.decoders import ByteLevel

        if not isinstance(backend.decoder, ByteLevel):
            return None
        added = backend.get_added_tokens_decoder()
        # Each alphabet character becomes the Latin-1 character of its byte, so a token's bytes
        # are one C-level translate and encode; a character outside the alphabet becomes one
        # Latin-1 cannot encode.
        table = dict.fromkeys(range(256), "\uffff")
        table.update((ord(c), chr(byte)) for c, byte in _byte_decoder().items())
        pieces: list[bytes] = [b""] * backend.get_vocab_size(with_added_tokens=True)
        for token, token_id in backend.get_vocab(with_added_tokens=True).items():
            if token_id >= len(pieces):
                return None
            if token_id in added:
                if not token.isascii():
                    return None
                pieces[token_id] = token.encode()
                continue
            try:
                pieces[token_id] = token.translate(table).encode("latin-1")
            except UnicodeEncodeError:
                return None
        return cls(pieces, {i for i, t in added.items() if t.special})


class Tokenizer:
    """Encodes text to token ids and decodes them back, the same way for every caller.

    ``decode`` never applies transformers' ``clean_up_tokenization_spaces``: the incremental
    detokenizer decodes in windows, and the clean-up (which rewrites spaces before punctuation)
    would make the streamed text differ from a whole decode.
    """

    def __init__(self, hf_tokenizer: Any, eos_token_ids: Iterable[int] = ()) -> None:
        """Wrap a loaded transformers tokenizer.

        :param hf_tokenizer: a transformers tokenizer (fast ones decode without Python overhead).
        :param eos_token_ids: more ids that end generation, e.g. from the model's
            ``generation_config.json``; the tokenizer's own EOS comes first.
        """
        self.hf = hf_tokenizer
        # The Rust tokenizer decodes directly; slow (remote-code) tokenizers go through transformers.
        self._backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        eos = [hf_tokenizer.eos_token_id] if hf_tokenizer.eos_token_id is not None else []
        self.eos_token_ids: list[int] = list(dict.fromkeys([*eos, *eos_token_ids]))
        self.bos_token_id: int | None = hf_tokenizer.bos_token_id
        self._adds_bos = self.bos_token_id is not None and (
            hf_tokenizer.encode("a", add_special_tokens=True)[:1] == [self.bos_token_id]
        )
        self._ids_by_text: dict[str, list[int]] | None = None
        self._byte_table: ByteTable | None | object = _UNBUILT

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        gguf_file: str | None = None,
        trust_remote_code: bool = False,
        eos_token_ids: Iterable[int] = (),
    ) -> Tokenizer:
        """Load the tokenizer of a Hugging Face model folder or of a GGUF file.

        :param path: a model folder, or a ``.gguf`` file (then ``gguf_file`` may be omitted).
        :param gguf_file: the GGUF file's name inside ``path``.
        :param trust_remote_code: allow a tokenizer class shipped as code with the model.
        :param eos_token_ids: more ids that end generation (see ``__init__``).
        """
        from transformers import AutoTokenizer, PreTrainedTokenizerFast

        path = Path(path)
        if gguf_file is None and path.suffix == ".gguf":
            path, gguf_file = path.parent, path.name
        target = path / gguf_file if gguf_file else path
        if not target.exists():
            raise ModelLoadError(f"No tokenizer at {target}; pass a model folder or a .gguf file that exists.")
        # A GGUF file holds the whole tokenizer, so the generic fast class reads it; AutoTokenizer
        # would first rebuild the model's config from the file, a second slow parse of it.
        try:
            if gguf_file:
                hf = PreTrainedTokenizerFast.from_pretrained(str(path), gguf_file=gguf_file)
            else:
                hf = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        except Exception as exc:  # transformers raises many types; the user needs one sentence
            raise ModelLoadError(
                f"Cannot load the tokenizer from {target} ({type(exc).__name__}: {exc}); "
                "check that the folder has tokenizer files or pass trust_remote_code=True."
            ) from exc
        return cls(hf, eos_token_ids)

    # ------------------------------------------------------------------ encode / decode

    @property
    def vocab_size(self) -> int:
        """Number of token ids, added tokens included."""
        return len(self.hf)

    @property
    def chat_template(self) -> str | None:
        """The tokenizer's Jinja chat template, or None when it has none."""
        template = getattr(self.hf, "chat_template", None)
        if isinstance(template, dict):  # several named templates: the default one is for chat
            template = template.get("default")
        return template or None

    @cached_property
    def special_texts(self) -> tuple[str, ...]:
        """How the special (control) tokens are spelled: ``<|im_start|>``, ``</s>``...

        Added tokens that are not marked special (``<think>`` in some vocabularies) are not
        among them: they are words a model writes, not the marks of a conversation's turns.
        """
        added = getattr(self.hf, "added_tokens_decoder", {}) or {}
        texts = [t.content for t in added.values() if getattr(t, "special", False)]
        texts += list(getattr(self.hf, "all_special_tokens", ()) or ())
        return tuple(dict.fromkeys(t for t in texts if t))

    @cached_property
    def max_token_chars(self) -> int:
        """The most characters of text one token can stand for (the longest vocabulary entry).

        A text of ``c`` characters is at least ``c / max_token_chars`` tokens long, which bounds
        a prompt's length without tokenizing it.
        """
        return max((len(token) for token in self.hf.get_vocab()), default=1) or 1

    def encode(self, text: str, add_bos: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``.

        BOS is prepended only when ``add_bos`` is set, the model's tokenizer adds one, and the
        text does not already start with it (a chat template often writes it out itself).
        With ``parse_special=False`` the spelling of a special token (``<|im_end|>``) is encoded
        as the plain characters it is made of, never as that token.
        """
        return self.encode_pieces([(text, parse_special)], add_bos)

    def encode_pieces(self, pieces: Iterable[tuple[str, bool]], add_bos: bool = True) -> list[int]:
        """Token ids of a text given in pieces, each with its own ``parse_special`` (see
        :meth:`encode`); BOS as for a single text."""
        ids: list[int] = []
        for text, parse_special in pieces:
            if text:
                plain = {} if parse_special else {"split_special_tokens": True}
                ids += self.hf.encode(text, add_special_tokens=False, **plain)
        if add_bos and self._adds_bos and ids[:1] != [self.bos_token_id]:
            ids.insert(0, self.bos_token_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; special tokens are dropped unless ``skip_special_tokens`` is False."""
        if self._backend is not None:
            return self._backend.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return self.hf.decode(
            list(ids), skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False
        )

    def byte_table(self) -> ByteTable | None:
        """Each token's bytes, for tokenizers whose decoder only concatenates byte-level BPE
        tokens (GPT-2 style: Llama 3, Qwen, SmolLM, ...); None for the others. Decoding is then
        a table lookup and an incremental UTF-8 decode (see the engine's detokenizer)."""
        if self._byte_table is _UNBUILT:
            self._byte_table = ByteTable.of(self)
        return self._byte_table

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        """The vocabulary entries (not the decoded text) of ``ids``."""
        return self.hf.convert_ids_to_tokens(list(ids))

    # ------------------------------------------------------------------ words as token ids

    def indexes_containing_token(self, word: str) -> list[int]:
        """Ids of the tokens whose text is exactly ``word``, in id order.

        A token's text is taken as it decodes after another token, so a SentencePiece token
        ``▁the`` is `` the`` (with its space), not ``the``. Several ids may qualify, e.g. a
        byte-fallback token and a regular one.
        """
        if self._ids_by_text is None:
            self._ids_by_text = self._build_text_index()
        return list(self._ids_by_text.get(word, ()))

    def stop_word_ids(self, words: Iterable[str] | None) -> list[int]:
        """Ids of the tokens that are exactly one of the stop ``words``.

        The engine masks them, like EOS, until ``min_new_tokens`` is reached. A stop word that
        spans several tokens has no such id; the detokenizer finds it in the text.
        """
        return self._ids_of_words(words)

    def bad_word_ids(self, words: Iterable[str] | None) -> list[int]:
        """Ids of the tokens that are exactly one of the bad ``words``; the sampler never picks
        them. A word that only exists as several tokens cannot be banned by token id."""
        return self._ids_of_words(words)

    def _ids_of_words(self, words: Iterable[str] | None) -> list[int]:
        ids: dict[int, None] = {}
        for word in words or ():
            ids.update(dict.fromkeys(self.indexes_containing_token(word)))
        return list(ids)

    def _build_text_index(self) -> dict[str, list[int]]:
        # Decode every token after an anchor token and strip the anchor's text: decoding a token
        # alone would drop the leading space that SentencePiece decoders strip at the start.
        anchor = self.hf.encode("a", add_special_tokens=False)[:1]
        anchor_text = self.decode(anchor, skip_special_tokens=False)
        pairs = [[*anchor, i] for i in range(self.vocab_size)]
        if self._backend is not None:
            texts = self._backend.decode_batch(pairs, skip_special_tokens=False)
        else:
            texts = [self.decode(p, skip_special_tokens=False) for p in pairs]
        index: dict[str, list[int]] = {}
        for token_id, text in enumerate(texts):
            index.setdefault(text[len(anchor_text):], []).append(token_id)
        return index
