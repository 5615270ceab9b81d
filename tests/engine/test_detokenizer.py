"""IncrementalDetokenizer: streamed text equals the whole decode, never a broken character,
stop words cut the text and are never emitted."""

from __future__ import annotations

import random

import pytest
from lmforge.engine.detokenizer import IncrementalDetokenizer
from lmforge.tokenizer import Tokenizer

TEXTS = [
    "hello world, the quick brown fox.",
    "你好，世界！这是一个测试。",
    "emoji 🙂👍🏽 and 🇫🇷 flags, mixed with 中文 and naïve café",
    "  leading spaces and\nnew lines\n\n\tand tabs",
]


@pytest.fixture(scope="module")
def tiny(byte_fallback_hf_tokenizer) -> Tokenizer:
    return Tokenizer(byte_fallback_hf_tokenizer)


@pytest.fixture(scope="module")
def smollm2(smollm2_tokenizer_dir) -> Tokenizer:
    return Tokenizer.from_pretrained(smollm2_tokenizer_dir)


def stream(tokenizer, prompt_ids, output_ids, **kwargs):
    """Feed ``output_ids`` one token at a time; return the deltas, the flush and the step at
    which it stopped (None if it did not)."""
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, **kwargs)
    deltas, stopped_at = [], None
    for i, token in enumerate(output_ids):
        step = detok.step([token])
        deltas.append(step.text_delta)
        if step.stopped:
            stopped_at = i
            break
    return deltas, detok.flush(), stopped_at


def in_context(tokenizer, prompt_ids, output_ids, **kwargs):
    """The reference: the text the output adds to the prompt's, decoded in one go."""
    whole = tokenizer.decode(prompt_ids + output_ids, **kwargs)
    prompt = tokenizer.decode(prompt_ids, **kwargs)
    assert whole.startswith(prompt)
    return whole[len(prompt):]


def check_streams_whole_decode(tokenizer, text, prompt="User: say it"):
    prompt_ids = tokenizer.encode(prompt)
    output_ids = tokenizer.encode(text, add_bos=False)
    deltas, tail, stopped_at = stream(tokenizer, prompt_ids, output_ids)
    assert stopped_at is None
    assert not any("\ufffd" in d for d in deltas)
    streamed = "".join(deltas) + tail
    assert streamed == in_context(tokenizer, prompt_ids, output_ids)
    return streamed, tokenizer.decode(output_ids)


@pytest.mark.parametrize("text", TEXTS)
def test_tiny_byte_fallback_streams_whole_decode(tiny, text):
    streamed, alone = check_streams_whole_decode(tiny, text)
    # SentencePiece drops the first space of what it decodes; in context the space stays.
    assert streamed in (alone, " " + alone)


@pytest.mark.slow
@pytest.mark.parametrize("text", TEXTS)
def test_smollm2_streams_whole_decode(smollm2, text):
    streamed, alone = check_streams_whole_decode(smollm2, text)
    assert streamed == alone  # byte-level BPE: no space handling at all


def test_byte_fallback_character_is_held_until_complete(tiny, byte_fallback_hf_tokenizer):
    ids = tiny.encode("🙂", add_bos=False)
    tokens = byte_fallback_hf_tokenizer.convert_ids_to_tokens(ids)
    assert tokens[-4:] == ["<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]  # one character, four tokens
    deltas, tail, _ = stream(tiny, tiny.encode("hi"), ids)
    assert deltas[-4:-1] == ["", "", ""]
    assert deltas[-1].endswith("🙂") and tail == ""


def test_incomplete_character_is_flushed_not_lost(tiny):
    ids = tiny.encode("ok 🙂", add_bos=False)[:-1]  # the emoji's last byte never comes
    deltas, tail, _ = stream(tiny, [], ids)
    assert "".join(deltas) + tail == tiny.decode(ids)
    assert tail.endswith("\ufffd")


WORDS = ["the", " quick", "你好", "🙂", "👍🏽", "café", ",", "\n", "  ", "<|end|>", "dog.", "é"]


def test_random_text_streams_match_whole_decode(tiny):
    rng = random.Random(0)
    for _ in range(40):
        text = "".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 20)))
        prompt_ids = tiny.encode(rng.choice(["", "go", "你"]))
        ids = tiny.encode(text, add_bos=False)
        for skip in (True, False):
            deltas, tail, _ = stream(tiny, prompt_ids, ids, skip_special_tokens=skip)
            assert not any("\ufffd" in d for d in deltas)
            assert "".join(deltas) + tail == in_context(
                tiny, prompt_ids, ids, skip_special_tokens=skip)


@pytest.mark.slow
def test_smollm2_random_token_streams_match_whole_decode(smollm2):
    # Byte-level BPE decodes invalid UTF-8 the same way in any window, so any ids will do.
    rng = random.Random(0)
    for _ in range(30):
        ids = [rng.randrange(smollm2.vocab_size) for _ in range(rng.randrange(1, 40))]
        deltas, tail, _ = stream(smollm2, [], ids, skip_special_tokens=False)
        assert "".join(deltas) + tail == smollm2.decode(ids, skip_special_tokens=False)


def test_sentencepiece_keeps_the_space_after_the_prompt(tiny, byte_fallback_hf_tokenizer):
    vocab = byte_fallback_hf_tokenizer.get_vocab()
    output_ids = [vocab["▁the"], vocab["d"]]
    assert tiny.decode(output_ids) == "thed"
    deltas, tail, _ = stream(tiny, tiny.encode("hello"), output_ids)
    assert deltas == [" the", "d"] and tail == ""


def test_special_tokens_skipped_or_kept(tiny):
    ids = tiny.encode("the end<|end|> hello", add_bos=False)
    skipped, tail_s, _ = stream(tiny, [], ids)
    kept, tail_k, _ = stream(tiny, [], ids, skip_special_tokens=False)
    assert "".join(skipped) + tail_s == tiny.decode(ids)
    assert "<|end|>" not in "".join(skipped)
    assert "".join(kept) + tail_k == tiny.decode(ids, skip_special_tokens=False)
    assert "<|end|>" in "".join(kept)


@pytest.mark.parametrize("include", [False, True])
@pytest.mark.parametrize("stop", ["fox jum", "o", "lazy dog.", ", the q"])
def test_stop_word_across_tokens(tiny, stop, include):
    text = "hello world, the quick brown fox jumps over the lazy dog. the end."
    prompt_ids, ids = tiny.encode("go"), tiny.encode(text, add_bos=False)
    deltas, tail, stopped_at = stream(
        tiny, prompt_ids, ids, stop_words=["never there", stop],
        include_stop_str_in_output=include,
    )
    full = in_context(tiny, prompt_ids, ids)
    cut = full.index(stop) + (len(stop) if include else 0)
    assert stopped_at is not None
    assert tail == ""
    assert "".join(deltas) == full[:cut]
    # The stop word completes in the token that stopped: the text before it does not hold it.
    assert stop in in_context(tiny, prompt_ids, ids[: stopped_at + 1])
    assert stop not in in_context(tiny, prompt_ids, ids[:stopped_at])


def test_only_a_possible_stop_word_start_is_held(tiny):
    stop = "end. stop there"
    ids = tiny.encode("the end. stop here!", add_bos=False)
    detok = IncrementalDetokenizer(tiny, [], stop_words=[stop])
    emitted = ""
    for i, token in enumerate(ids):
        step = detok.step([token])
        assert not step.stopped
        emitted += step.text_delta
        so_far = tiny.decode(ids[: i + 1])
        held = so_far[len(emitted):]
        assert so_far.startswith(emitted)
        longest = max(n for n in range(len(stop)) if n == 0 or so_far.endswith(stop[:n]))
        assert held == so_far[len(so_far) - longest:]
    assert emitted + detok.flush() == tiny.decode(ids)
    assert detok.flush() == ""


def test_stop_word_in_prompt_does_not_stop(tiny):
    prompt_ids, output_ids = tiny.encode("the end."), tiny.encode("hello", add_bos=False)
    deltas, tail, stopped_at = stream(tiny, prompt_ids, output_ids, stop_words=["end."])
    assert stopped_at is None
    assert "".join(deltas) + tail == tiny.decode(prompt_ids + output_ids)[len("the end."):]


def test_earliest_completed_stop_word_wins(tiny):
    ids = tiny.encode("the quick brown fox", add_bos=False)
    detok = IncrementalDetokenizer(tiny, [], stop_words=["quick brown fox", "ck b"])
    out = [detok.step(ids).text_delta]  # all in one step: both stop words are in the text
    assert out == ["the qui"] and detok.stopped
    assert detok.step([5]).stopped and detok.step([5]).text_delta == ""


def test_special_token_as_stop_word(tiny):
    ids = tiny.encode("hello<|end|> world", add_bos=False)
    deltas, tail, stopped_at = stream(
        tiny, [], ids, skip_special_tokens=False, stop_words=["<|end|>"]
    )
    assert stopped_at is not None and "".join(deltas) == "hello"


def test_each_step_decodes_a_short_window(tiny):
    calls = []
    decode = tiny.decode

    class Counting:
        def decode(self, ids, skip_special_tokens=True):
            calls.append(len(ids))
            return decode(ids, skip_special_tokens)

        def byte_table(self):
            return None  # the windowed path

    ids = tiny.encode("the quick brown fox jumps over the lazy dog. " * 80, add_bos=False)
    prompt_ids = tiny.encode("go")
    detok = IncrementalDetokenizer(Counting(), prompt_ids, stop_words=["zebra"])
    text = "".join(detok.step([t]).text_delta for t in ids) + detok.flush()
    assert text == in_context(tiny, prompt_ids, ids)
    assert len(ids) > 300 and max(calls) <= 8


def test_byte_level_tokenizers_take_the_table_path_and_decode_the_same(smollm2):
    """SmolLM2's tokenizer is byte-level BPE: its detokenizer looks bytes up in a table. On
    random ids (broken UTF-8 included) and special tokens, streamed text equals the whole
    decode, with and without skipping special tokens."""
    table = smollm2.byte_table()
    assert table is not None and {0, 1, 2} <= table.special
    rng = random.Random(7)
    for trial in range(40):
        # Ids past the tokenizer's vocabulary (a model with a larger one) decode to nothing.
        ids = [rng.randrange(smollm2.vocab_size + 100) for _ in range(rng.randint(1, 40))]
        if trial % 4 == 0:
            ids[rng.randrange(len(ids))] = 2  # a special token in the middle
        for skip in (True, False):
            detok = IncrementalDetokenizer(smollm2, [1, 42], skip_special_tokens=skip)
            streamed = "".join(detok.step([t]).text_delta for t in ids) + detok.flush()
            assert streamed == smollm2.decode(ids, skip_special_tokens=skip), (ids, skip)


def test_the_window_path_still_serves_other_tokenizers(tiny):
    assert tiny.byte_table() is None  # a SentencePiece-style decoder
    check_streams_whole_decode(tiny, TEXTS[1])
