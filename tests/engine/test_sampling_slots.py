"""Sampling parameters kept per batch slot on the device give the same tokens as gathering them
row by row, as sequences come and go through the slots; rows the slot path does not cover fall
back to the row-by-row gathering."""

from __future__ import annotations

import random

import pytest
import torch
from lmforge.engine.sampler import Sampler
from lmforge.engine.sampling_batch import SamplingBatch
from lmforge.engine.sampling_slots import SlotSampling
from lmforge.engine.sequence import Sequence
from lmforge.engine.slots import BatchSlots
from lmforge.messages import GenerationConfig

VOCAB = 40
EOS = [3, 7]

PLAIN = [
    dict(),  # top_k 1 by default: greedy
    dict(temperature=0.0, top_k=0),
    dict(temperature=0.7, top_k=5),
    dict(temperature=1.3, top_k=0, top_p=0.8),
    dict(temperature=0.9, top_k=0, min_p=0.2, ignore_eos=True),
    dict(temperature=0.0, ignore_eos=True),
    dict(top_k=VOCAB + 5, random_seed=11),  # a top-k past the vocabulary is no limit
    dict(temperature=0.5, top_k=3, top_p=0.9, min_p=0.05, random_seed=3, ignore_eos=True),
]
SPECIAL = [
    dict(bad_token_ids=[5]),
    dict(min_new_tokens=4),
    dict(repetition_penalty=1.2),
    dict(logprobs=2),
]


def _sequence(cfg: dict) -> Sequence:
    return Sequence([1, 2, 4], GenerationConfig(max_new_tokens=100, **cfg),
                    output_ids=[9] * random.randrange(3))


def _tokens(batch: SamplingBatch, logits: torch.Tensor) -> list[int]:
    return Sampler().sample(logits.clone(), batch).token_ids.tolist()


DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")])]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_special", [False, True])
def test_slot_path_gives_the_row_by_row_tokens_as_slots_change_hands(with_special, device):
    random.seed(0)
    torch.manual_seed(0)
    slots = BatchSlots()
    running: list[Sequence] = []
    state = SlotSampling(VOCAB, device, EOS, rng=random.Random(5))
    reference_rng = random.Random(5)
    kinds = PLAIN + (SPECIAL if with_special else [])
    by_rows = state._by_rows
    fallbacks = []
    state._by_rows = lambda seqs: (fallbacks.append(len(seqs)), by_rows(seqs))[1]
    for step in range(60):
        # Some sequences finish (their slots go back), new ones start in the freed slots.
        for seq in random.sample(running, k=min(len(running), random.randrange(4))):
            running.remove(seq)
            slots.release(seq)
        for _ in range(random.randrange(1, 5) if len(running) < 24 else 0):
            seq = _sequence(random.choice(kinds))
            slots.take(seq)
            running.append(seq)
        rows = random.sample(running, k=len(running))  # any row order
        logits = torch.randn(len(rows), VOCAB).to(device)
        logits[:, EOS] += 4.0  # the end-of-sequence ids would win unless banned
        got = state.batch(rows)
        expected = SamplingBatch.from_sequences(rows, VOCAB, device, EOS, rng=reference_rng)
        tokens = _tokens(got, logits)
        assert tokens == _tokens(expected, logits), step
        for seq, token in zip(rows, tokens, strict=True):
            assert not (seq.gen_config.ignore_eos and token in EOS)
            seq.output_ids.append(token)  # seeded rows' noise follows their length
    # Plain rows always take the slot path; a step with a special row is gathered row by row.
    assert bool(fallbacks) == with_special


def test_a_row_the_slot_path_does_not_cover_falls_back_for_its_step():
    slots = BatchSlots()
    seqs = [_sequence(dict(temperature=0.0)), _sequence(dict(bad_token_ids=[5]))]
    for seq in seqs:
        slots.take(seq)
    state = SlotSampling(VOCAB, "cpu", EOS)
    batch = state.batch(seqs)
    assert batch.masked is not None and batch.masked.tolist() == [VOCAB + 5]
    # Without the special row, the plain one is gathered from its slot.
    batch = state.batch(seqs[:1])
    assert batch.masked is None and batch.all_greedy and batch.ban_rows is None


def test_sequences_without_a_slot_are_gathered_row_by_row():
    seq = _sequence(dict(ignore_eos=True, temperature=0.0))  # never given a slot
    batch = SlotSampling(VOCAB, "cpu", EOS).batch([seq])
    assert batch.ban_rows is None and sorted(batch.masked.tolist()) == EOS


def test_only_new_sequences_are_written():
    slots = BatchSlots()
    seqs = [_sequence(dict(temperature=0.5, top_k=4)) for _ in range(3)]
    for seq in seqs:
        slots.take(seq)
    state = SlotSampling(VOCAB, "cpu", EOS)
    writes = []
    original = state._write
    state._write = lambda new: (writes.append([s.seq_id for s in new]), original(new))[1]
    state.batch(seqs)
    state.batch(seqs[1:])
    freed = seqs[0].slot
    slots.release(seqs[0])
    newcomer = _sequence(dict(temperature=0.0))
    slots.take(newcomer)
    assert newcomer.slot == freed
    batch = state.batch([newcomer, *seqs[1:]])
    assert writes == [[s.seq_id for s in seqs], [newcomer.seq_id]]
    assert batch.sample_rows.tolist() == [1, 2] and batch.top_k.tolist() == [4, 4]
