"""Tokenizer: BOS handling, decode, EOS ids, words as token ids, loading from GGUF."""

from __future__ import annotations

import pytest
from lmforge.errors import ModelLoadError
from lmforge.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok(byte_fallback_hf_tokenizer) -> Tokenizer:
    return Tokenizer(byte_fallback_hf_tokenizer, eos_token_ids=[7, 2])


def test_encode_adds_bos_once(tok, byte_fallback_hf_tokenizer):
    plain = byte_fallback_hf_tokenizer.encode("hello world", add_special_tokens=False)
    assert tok.bos_token_id == 1
    assert tok.encode("hello world") == [1, *plain]
    assert tok.encode("<s>hello world") == [1, *plain]
    assert tok.encode("hello world", add_bos=False) == plain


def test_decode_skips_special_tokens_on_request(tok, byte_fallback_hf_tokenizer):
    ids = tok.encode("hello<|end|> world")
    assert tok.decode(ids) == byte_fallback_hf_tokenizer.decode(ids, skip_special_tokens=True)
    assert "<|end|>" not in tok.decode(ids)
    assert "<|end|>" in tok.decode(ids, skip_special_tokens=False)
    assert tok.decode(tok.encode("你好 🙂", add_bos=False)) == "你好 🙂"


def test_eos_ids_put_the_tokenizers_first_without_duplicates(tok):
    assert tok.eos_token_ids == [2, 7]


def test_words_map_to_exact_token_ids(tok, byte_fallback_hf_tokenizer):
    vocab = byte_fallback_hf_tokenizer.get_vocab()
    # SentencePiece marks a leading space with "▁": "▁the" is " the", never "the".
    assert vocab["▁the"] in tok.indexes_containing_token(" the")
    assert vocab["▁the"] not in tok.indexes_containing_token("the")
    assert tok.indexes_containing_token("<|end|>") == [vocab["<|end|>"]]
    # A character seen in training is also reachable through its byte-fallback token.
    assert tok.indexes_containing_token("!") == sorted([vocab["!"], vocab["<0x21>"]])
    assert tok.indexes_containing_token("Z") == [vocab["<0x5A>"]]
    assert tok.indexes_containing_token("no such word") == []
    assert tok.stop_word_ids(["<|end|>", " the"]) == [vocab["<|end|>"], *tok.indexes_containing_token(" the")]
    assert tok.bad_word_ids(None) == []


def test_every_reported_id_decodes_to_the_word(tok):
    for word in [" the", "d", ".", "<|end|>", "a"]:
        for token_id in tok.indexes_containing_token(word):
            anchor = tok.encode("a", add_bos=False)
            text = tok.decode(anchor + [token_id], skip_special_tokens=False)
            assert text == tok.decode(anchor, skip_special_tokens=False) + word


def test_misc_properties(tok, byte_fallback_hf_tokenizer):
    assert tok.vocab_size == len(byte_fallback_hf_tokenizer)
    assert tok.chat_template is None
    assert tok.convert_ids_to_tokens([1, 2]) == ["<s>", "</s>"]


def test_missing_path_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="No tokenizer"):
        Tokenizer.from_pretrained(tmp_path / "absent")
    with pytest.raises(ModelLoadError, match="Cannot load the tokenizer"):
        Tokenizer.from_pretrained(tmp_path)


@pytest.mark.slow
def test_smollm2_from_gguf(smollm2_gguf):
    by_file = Tokenizer.from_pretrained(smollm2_gguf, eos_token_ids=[2, 0])
    assert by_file.vocab_size == 49152
    assert by_file.eos_token_ids == [2, 0]
    assert by_file.bos_token_id == 1
    # SmolLM2's tokenizer adds no BOS: the ChatML template writes <|im_start|> itself.
    assert by_file.encode("hello") == by_file.encode("hello", add_bos=False)
    assert "<|im_start|>" in by_file.chat_template
    text = "Hello, 世界! 🙂 naïve café\n\tcode()"
    assert by_file.decode(by_file.encode(text)) == text
    assert by_file.indexes_containing_token("<|im_end|>") == [2]


@pytest.mark.slow
def test_gguf_tokenizer_equals_transformers_auto_tokenizer(smollm2_gguf):
    # lmforge loads a GGUF's tokenizer with the generic fast class (one read of the file);
    # it must be the tokenizer AutoTokenizer builds from the same file.
    from transformers import AutoTokenizer

    ours = Tokenizer.from_pretrained(smollm2_gguf).hf
    auto = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    text = "Hello <|im_start|>user\n  two  spaces, ünïcødé 你好 🙂 123456\n\n<|im_end|>"
    assert ours.encode(text) == auto.encode(text)
    assert ours.decode(ours.encode(text)) == auto.decode(auto.encode(text))
    assert (ours.bos_token_id, ours.eos_token_id, len(ours)) == (
        auto.bos_token_id, auto.eos_token_id, len(auto))
    assert ours.chat_template == auto.chat_template
