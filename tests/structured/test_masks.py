"""Token bitmasks: applying one on the logits against a plain reference, and filling many rows
in parallel the same as one by one."""

from __future__ import annotations

import random

import pytest
import torch
from lmforge.errors import ConfigError
from lmforge.structured import Grammar, masks
from lmforge.structured.compiler import GrammarCompiler
from lmforge.structured.masks import GrammarRows, apply_bitmask, bitmask_width, fill_bitmask
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


@pytest.mark.parametrize("vocab, rows", [(70, [0, 1, 2]), (70, [2, 0]), (96, [1]), (100, [])])
def test_apply_matches_reference(vocab, rows):
    rng = random.Random(vocab + len(rows))
    logits = torch.randn(3, vocab)
    # A bitmask narrower than the logits (vocab 100 vs 96 bits) excludes the rest.
    bitmask = random_bitmask(len(rows), min(vocab, 96), rng)
    want = reference_apply(logits, rows, bitmask)
    got = logits.clone()
    every_row = rows == list(range(3))
    apply_bitmask(got, None if every_row else torch.tensor(rows, dtype=torch.long), bitmask)
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
