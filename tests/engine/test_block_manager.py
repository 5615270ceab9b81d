"""BlockManager: allocation math, reference counts, prefix caching and its LRU."""

from __future__ import annotations

import pytest
from lmforge.engine.block_manager import BlockManager
from lmforge.engine.sequence import Sequence

BS = 4


def computed(bm: BlockManager, seq: Sequence, n: int) -> None:
    """Allocate ``n`` tokens, pretend a step computed them, and commit their hashes."""
    bm.allocate(seq, n)
    seq.num_computed += n
    bm.commit(seq)


def test_allocation_math():
    bm = BlockManager(num_blocks=8, block_size=BS)
    seq = Sequence(list(range(10)))
    assert bm.num_allocatable_tokens(seq) == 32
    bm.allocate(seq, 10)
    assert len(seq.block_ids) == 3 and len(set(seq.block_ids)) == 3
    assert (bm.num_used_blocks, bm.num_free_blocks) == (3, 5)
    seq.num_computed = 10
    bm.allocate(seq, 2)  # positions 10 and 11 fit in the third block
    assert len(seq.block_ids) == 3
    bm.allocate(seq, 3)
    assert len(seq.block_ids) == 4
    assert all(bm.ref_count(b) == 1 for b in seq.block_ids)
    bm.free(seq)
    assert seq.block_ids == [] and seq.num_computed == 0
    assert bm.num_free_blocks == 8 and all(bm.ref_count(b) == 0 for b in range(8))


def test_cannot_allocate_past_the_pool():
    bm = BlockManager(num_blocks=2, block_size=BS)
    seq = Sequence(list(range(9)))
    assert bm.can_allocate(seq, 8) and not bm.can_allocate(seq, 9)
    assert not bm.can_allocate(seq, 4, reserve=2)
    with pytest.raises(RuntimeError):
        bm.allocate(seq, 9)
    assert seq.block_ids == [] and bm.num_free_blocks == 2


def test_prefix_hit_on_identical_prompt_shares_blocks():
    bm = BlockManager(num_blocks=8, block_size=BS)
    prompt = list(range(100, 110))
    a = Sequence(list(prompt))
    assert bm.match(a) == 0
    computed(bm, a, 10)
    b = Sequence(list(prompt))
    assert bm.match(b) == 8
    bm.allocate(b, 2)
    assert (b.num_computed, b.num_cached) == (8, 8)
    assert b.block_ids[:2] == a.block_ids[:2] and b.block_ids[2] != a.block_ids[2]
    assert [bm.ref_count(x) for x in b.block_ids] == [2, 2, 1]
    assert bm.num_used_blocks == 4
    bm.free(a)
    assert [bm.ref_count(x) for x in b.block_ids] == [1, 1, 1]
    bm.free(b)
    assert bm.num_free_blocks == 8 and bm.num_cached_blocks == 2


def test_last_prompt_token_is_never_cached():
    bm = BlockManager(num_blocks=8, block_size=BS)
    computed(bm, Sequence(list(range(8))), 8)
    # Two full blocks match, but the last token must run to give logits: only one is reused.
    assert bm.match(Sequence(list(range(8)))) == 4
    assert bm.match(Sequence(list(range(9)))) == 8


def test_shared_prefix_and_chained_hashes():
    bm = BlockManager(num_blocks=16, block_size=BS)
    system = [7, 7, 7, 7, 8, 8, 8, 8]
    computed(bm, Sequence(system + [1, 2, 3, 4, 5]), 13)
    assert bm.match(Sequence(system + [9, 9, 9, 9, 9])) == 8
    assert bm.match(Sequence(system + [1, 2, 3, 4, 6])) == 12
    # The same tokens after a different prefix are a different block.
    assert bm.match(Sequence([0, 0, 0, 0] + system[4:] + [1])) == 0
    assert bm.match(Sequence(system[4:] + [1, 2, 3, 4, 5])) == 0


def test_adapters_and_opt_out_do_not_share():
    bm = BlockManager(num_blocks=8, block_size=BS)
    prompt = list(range(9))
    computed(bm, Sequence(list(prompt)), 9)
    assert bm.match(Sequence(list(prompt), adapter="lora-a")) == 0
    assert bm.match(Sequence(list(prompt), allow_prefix_match=False)) == 0
    lora = Sequence(list(prompt), adapter="lora-a")
    computed(bm, lora, 9)
    assert bm.match(Sequence(list(prompt), adapter="lora-a")) == 8
    assert bm.match(Sequence(list(prompt), adapter="lora-b")) == 0


def test_freed_blocks_stay_cached_until_needed_in_lru_order():
    bm = BlockManager(num_blocks=6, block_size=BS)
    a, b = Sequence([1] * 8 + [0]), Sequence([2] * 8 + [0])
    computed(bm, a, 9)
    computed(bm, b, 9)
    a_full, b_full = a.block_ids[:2], b.block_ids[:2]
    bm.free(a)
    bm.free(b)
    assert bm.num_free_blocks == 6 and bm.num_cached_blocks == 4
    # Never-hashed blocks are used first; the cache is untouched.
    c = Sequence(list(range(100, 108)))
    bm.allocate(c, 8)
    assert bm.num_cached_blocks == 4
    assert bm.match(Sequence([1] * 8 + [0])) == 8 and bm.match(Sequence([2] * 8 + [0])) == 8
    # Then the least recently freed, tail block first: a's second block, then a's first.
    d = Sequence(list(range(200, 204)))
    bm.allocate(d, 4)
    assert d.block_ids == [a_full[1]]
    assert bm.match(Sequence([1] * 8 + [0])) == 4
    e = Sequence(list(range(300, 308)))
    bm.allocate(e, 8)
    assert e.block_ids == [a_full[0], b_full[1]]
    assert bm.match(Sequence([1] * 8 + [0])) == 0
    assert bm.match(Sequence([2] * 8 + [0])) == 4


def test_reusing_a_cached_block_refreshes_it_in_the_lru():
    bm = BlockManager(num_blocks=4, block_size=BS)
    a, b = Sequence([1] * 4 + [0]), Sequence([2] * 4 + [0])
    computed(bm, a, 5)
    computed(bm, b, 5)
    bm.free(a)
    bm.free(b)
    again = Sequence([1] * 4 + [5])
    bm.allocate(again, 1)  # takes a's block back out of the LRU
    bm.free(again)
    # Now b's block is the least recently used one.
    bm.allocate(Sequence(list(range(10, 18))), 8)
    bm.allocate(Sequence(list(range(20, 24))), 4)
    assert bm.match(Sequence([1] * 4 + [0])) == 4
    assert bm.match(Sequence([2] * 4 + [0])) == 0


def test_can_allocate_counts_cached_hits_taken_from_the_free_pool():
    bm = BlockManager(num_blocks=3, block_size=BS)
    a = Sequence(list(range(9)))
    computed(bm, a, 9)
    bm.free(a)
    assert (bm.num_free_blocks, bm.num_cached_blocks) == (3, 2)
    b = Sequence(list(range(8)) + [50] * 9)
    assert bm.match(b) == 8
    # The two hits leave the free pool too: one block is left for the 9 new tokens' 3 blocks.
    assert bm.num_allocatable_tokens(b) == 4
    assert not bm.can_allocate(b, 9) and bm.can_allocate(b, 4)
    bm.allocate(b, 4)
    assert bm.num_free_blocks == 0 and b.num_computed == 8


def test_blocks_computed_twice_side_by_side_are_registered_once():
    bm = BlockManager(num_blocks=8, block_size=BS)
    a, b = Sequence(list(range(9))), Sequence(list(range(9)))
    bm.allocate(a, 9)
    bm.allocate(b, 9)
    for s in (a, b):
        s.num_computed = 9
        bm.commit(s)
    a_full = a.block_ids[:2]
    bm.free(b)
    assert bm.num_cached_blocks == 0  # b's copies were never registered
    bm.free(a)
    assert bm.num_cached_blocks == 2 and bm.num_free_blocks == 8
    c = Sequence(list(range(9)))
    bm.allocate(c, 1)
    assert c.block_ids[:2] == a_full and c.num_cached == 8


def test_reset_prefix_cache():
    bm = BlockManager(num_blocks=6, block_size=BS)
    a, b = Sequence(list(range(9))), Sequence([5] * 9)
    computed(bm, a, 9)
    computed(bm, b, 9)
    bm.free(a)
    bm.reset_prefix_cache()
    assert bm.num_cached_blocks == 0 and bm.num_free_blocks == 3
    assert bm.match(Sequence(list(range(9)))) == 0 and bm.match(Sequence([5] * 9)) == 0
    bm.free(b)
    assert bm.num_free_blocks == 6 and bm.num_cached_blocks == 0


def test_a_kept_session_extends_its_blocks():
    bm = BlockManager(num_blocks=8, block_size=BS)
    turn = Sequence(list(range(6)))
    computed(bm, turn, 6)
    first_blocks = list(turn.block_ids)
    turn.prompt_ids.extend([40, 41, 42, 43, 44])  # the next turn's prompt, same table
    bm.allocate(turn, turn.num_uncomputed)
    assert turn.block_ids[:2] == first_blocks and len(turn.block_ids) == 3
    turn.num_computed = turn.num_tokens
    bm.commit(turn)
    assert bm.match(Sequence(list(range(6)) + [40, 41, 42, 43, 44, 45])) == 8


def test_a_block_is_registered_only_once_its_pending_token_is_known():
    # Steps are queued before the previous token is read: a block that a step completes with a
    # token still being sampled must not be hashed with the placeholder.
    bm = BlockManager(num_blocks=8, block_size=BS)
    seq = Sequence(list(range(100, 106)))
    computed(bm, seq, 6)
    seq.append_token(106)
    index = seq.append_placeholder()
    computed(bm, seq, 2)  # positions 6 and 7: the second block is full, its last token pending
    probe = Sequence(list(range(100, 108)) + [200])
    assert bm.match(probe) == 4
    seq.fill_placeholder(index, 107)
    bm.commit(seq)
    assert bm.match(probe) == 8
