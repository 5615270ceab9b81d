"""Token bitmasks: applying one on the logits against a plain reference, and filling many rows
in parallel the same as one by one."""

from __future__ import annotations

import random

import pytest
import torch
from lmforge.errors import ConfigError
from lmforge.structured import Grammar, masks
from lmforge.structured.compiler import GrammarCompiler
from lmforge.structured.masks import (
    GrammarRows,
    MaskStaging,
    apply_bitmask,
    apply_bitmask_reference,
    bitmask_width,
    fill_bitmask,
)
from lmforge.tokenizer import Tokenizer


def reference_apply(logits: torch.Tensor, rows: list[int], bitmask: torch.Tensor) -> torch.Tensor:
    out = logits.clone()
    for i, row in enumerate(rows):
        for token in range(logits.shape[1]):
            word = token // 32
            if word >= bitmask.shape[1] or not (int(bitmask[i, word]) >> (token % 32)) & 1:
                out[row, token] = float("-inf")
    return out


def random_bitmask(rows: int, vocab: int, rng: random.Random) -> torch.Tensor:
    words = [[rng.getrandbits(32) for _ in range(bitmask_width(vocab))] for _ in range(rows)]
    # int32 holds the bits as signed values; bit 31 is the sign.
    return torch.tensor([[w - (1 << 32) if w >> 31 else w for w in r] for r in words],
                        dtype=torch.int32)


@pytest.mark.parametrize("apply", [apply_bitmask, apply_bitmask_reference])
@pytest.mark.parametrize("vocab, rows", [(70, [0, 1, 2]), (70, [2, 0]), (96, [1]), (100, []),
                                         (100, [0, 2])])
def test_apply_matches_reference(apply, vocab, rows):
    rng = random.Random(vocab + len(rows))
    logits = torch.randn(3, vocab)
    # A bitmask narrower than the logits (vocab 100 vs 96 bits) excludes the rest.
    bitmask = random_bitmask(len(rows), min(vocab, 96), rng)
    want = reference_apply(logits, rows, bitmask)
    got = logits.clone()
    every_row = rows == list(range(3))
    apply(got, None if every_row else torch.tensor(rows, dtype=torch.long), bitmask)
    assert torch.equal(got, want)


@pytest.fixture(scope="module")
def compiler(smollm2_tokenizer_dir):
    return GrammarCompiler(Tokenizer.from_pretrained(smollm2_tokenizer_dir), 49152, [2])


def test_parallel_fill_equals_one_by_one(compiler):
    schema = {"type": "object", "properties": {"n": {"type": "integer"},
                                               "s": {"type": "string", "maxLength": 5}}}
    compiled = compiler.compile(Grammar.json_schema(schema))
    states = [compiled.new_state() for _ in range(6)]
    rng = random.Random(0)
    for _ in range(12):
        together = fill_bitmask(states)
        alone = torch.cat([fill_bitmask([s]) for s in states])
        assert torch.equal(together, alone)
        for row, state in enumerate(states):
            if state.done:
                assert bool((together[row] == -1).all())  # an ended row is left unmasked
                continue
            bits = ((together[row].unsqueeze(1) >> torch.arange(32)) & 1).flatten()
            assert state.accept(rng.choice(bits.nonzero().flatten().tolist()))


def test_fill_threads_from_the_environment(compiler, monkeypatch):
    monkeypatch.setenv("LMFORGE_GRAMMAR_THREADS", "3")
    assert masks.grammar_threads() == 3
    masks.reset_executor()
    states = [compiler.compile(Grammar("regex", "[0-9]+")).new_state() for _ in range(4)]
    assert torch.equal(fill_bitmask(states), torch.cat([fill_bitmask([s]) for s in states]))
    masks.reset_executor()
    monkeypatch.setenv("LMFORGE_GRAMMAR_THREADS", "many")
    with pytest.raises(ConfigError, match="LMFORGE_GRAMMAR_THREADS is 'many'"):
        masks.grammar_threads()
    monkeypatch.delenv("LMFORGE_GRAMMAR_THREADS")
    assert 1 <= masks.grammar_threads() <= 16


def test_grammar_rows_skip_rows_without_grammar(compiler):
    compiled = compiler.compile(Grammar("regex", "7"))
    rows = GrammarRows([1], [compiled.new_state()])
    index, bitmask = rows.device_masks(torch.device("cpu"), batch_size=2)
    assert index.tolist() == [1] and bitmask.shape == (1, bitmask_width(49152))
    logits = torch.zeros(2, 49152)
    apply_bitmask(logits, index, bitmask)
    seven = compiler.tokenizer.encode("7", add_bos=False)[0]
    assert torch.isfinite(logits[1]).nonzero().flatten().tolist() == [seven]
    assert bool(torch.isfinite(logits[0]).all())


def test_staging_reuses_its_buffer_and_fills_like_a_fresh_mask(compiler):
    compiled = compiler.compile(Grammar.json_schema({"type": "array", "items": {"type": "integer"}}))
    states = [compiled.new_state() for _ in range(3)]
    staging = MaskStaging()
    first = staging.fill(states, torch.device("cpu"))
    assert torch.equal(first, fill_bitmask(states))
    for state, text in zip(states, ["[1", "[", "[2, 3]"], strict=True):
        for token in compiler.tokenizer.encode(text, add_bos=False):
            assert state.accept(token)
    # The buffer is reused, and rows written before (a live row, then an ended one) are
    # rewritten in full.
    second = staging.fill(states[:2], torch.device("cpu"))
    assert second.data_ptr() == first.data_ptr()
    assert torch.equal(second, fill_bitmask(states[:2]))
    third = staging.fill(states, torch.device("cpu"))
    assert states[2].done and bool((third[2] == -1).all())
    assert torch.equal(third, fill_bitmask(states))
