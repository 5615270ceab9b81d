"""Sampler: greedy, the support and frequencies of temperature/top-k/top-p/min-p against a plain
reference, seeded reproducibility, penalties, masks and logprobs."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch
from lmforge.engine.sampler import Sampler, SamplingBatch, apply_penalties, hash32
from lmforge.engine.sequence import Sequence
from lmforge.messages import GenerationConfig
from transformers import RepetitionPenaltyLogitsProcessor

EOS = 0
LOGITS = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0]


def seq(prompt=(1, 2, 3), output=(), **cfg) -> Sequence:
    return Sequence(list(prompt), GenerationConfig(**cfg), output_ids=list(output))


def sample(seqs, logits, **kwargs):
    batch = SamplingBatch.from_sequences(seqs, logits.shape[1], logits.device, [EOS], **kwargs)
    return Sampler().sample(logits, batch)


def reference_probs(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) -> dict[int, float]:
    """Top-k, then top-p, then min-p, written out plainly."""
    scaled = [x / temperature for x in logits]
    order = sorted(range(len(scaled)), key=lambda i: -scaled[i])
    keep = order[:top_k] if top_k else order

    def normalised(ids, weights):
        total = sum(weights)
        return {i: w / total for i, w in zip(ids, weights, strict=True)}

    probs = normalised(keep, [math.exp(scaled[i]) for i in keep])
    kept, mass = [], 0.0
    for i in keep:
        if mass >= top_p:
            break
        kept.append(i)
        mass += probs[i]
    probs = normalised(kept, [probs[i] for i in kept])
    top = max(probs.values())
    kept = [i for i in kept if probs[i] >= min_p * top]
    return normalised(kept, [probs[i] for i in kept])


def empirical(seqs, logits_row, n=4000):
    """Sample one token for each of n seeded copies of the same distribution."""
    logits = torch.tensor([logits_row] * n)
    tokens = sample(seqs, logits).token_ids.tolist()
    return {t: c / n for t, c in Counter(tokens).items()}


CASES = [
    dict(temperature=1.0, top_k=0),
    dict(temperature=0.5, top_k=0),
    dict(temperature=2.0, top_k=0),
    dict(temperature=1.0, top_k=3),
    dict(temperature=1.0, top_k=0, top_p=0.8),
    dict(temperature=1.0, top_k=4, top_p=0.7),
    dict(temperature=1.0, top_k=0, min_p=0.2),
    dict(temperature=0.7, top_k=5, top_p=0.9, min_p=0.05),
]


@pytest.mark.parametrize("cfg", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_support_and_frequencies_match_reference(cfg):
    n = 4000
    freqs = empirical([seq(random_seed=i, **cfg) for i in range(n)], LOGITS, n)
    ref = reference_probs(LOGITS, **cfg)
    assert set(freqs) <= set(ref)  # nothing outside the support, ever
    assert {t for t, p in ref.items() if p > 0.005} <= set(freqs)
    for token, p in ref.items():
        assert abs(freqs.get(token, 0.0) - p) < 0.03, (token, p)


def test_rows_with_and_without_top_k_in_one_batch():
    n = 4000
    seqs = [seq(random_seed=i, temperature=1.0, top_k=3 if i % 2 else 0) for i in range(n)]
    tokens = sample(seqs, torch.tensor([LOGITS] * n)).token_ids.tolist()
    for top_k, rows in ((3, tokens[1::2]), (0, tokens[0::2])):
        ref = reference_probs(LOGITS, top_k=top_k)
        counts = Counter(rows)
        assert set(counts) == set(ref)
        for token, p in ref.items():
            assert abs(counts[token] / len(rows) - p) < 0.04


def test_greedy_rows_take_argmax_in_a_mixed_batch():
    torch.manual_seed(0)
    logits = torch.randn(6, 500)
    seqs = [seq(temperature=0.0), seq(top_k=1), seq(top_k=0, temperature=1.0, random_seed=1),
            seq(temperature=0.0, top_k=0), seq(top_k=50, temperature=1.5), seq(top_k=1)]
    out = sample(seqs, logits).token_ids
    greedy = [0, 1, 3, 5]
    assert out[greedy].tolist() == logits.argmax(-1)[greedy].tolist()
    all_greedy = sample([seq(temperature=0.0)] * 6, logits)
    assert torch.equal(all_greedy.token_ids, logits.argmax(-1))
    assert all_greedy.logprobs is None


def test_seeded_request_is_reproducible_whatever_the_batch():
    torch.manual_seed(0)
    steps = [torch.randn(1000) for _ in range(10)]

    def run(seed, neighbours, row, rng_seed):
        target = seq(top_k=0, temperature=1.0, random_seed=seed)
        rng = random.Random(rng_seed)
        for logits_row in steps:
            others = [seq(top_k=0, temperature=1.0, output=[7] * i) for i in range(neighbours)]
            others.insert(row, target)
            logits = torch.randn(len(others), 1000)
            logits[row] = logits_row
            token = sample(others, logits, rng=rng).token_ids[row].item()
            target.append_token(token)
        return target.output_ids

    first = run(42, 0, 0, rng_seed=1)
    assert run(42, 5, 3, rng_seed=2) == first
    assert run(42, 2, 2, rng_seed=3) == first
    assert run(43, 0, 0, rng_seed=1) != first


def test_unseeded_rows_follow_the_given_rng():
    logits = torch.zeros(64, 1000)
    seqs = [seq(top_k=0, temperature=1.0) for _ in range(64)]
    a = sample(seqs, logits, rng=random.Random(5)).token_ids
    b = sample(seqs, logits, rng=random.Random(5)).token_ids
    c = sample(seqs, logits, rng=random.Random(6)).token_ids
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_repetition_penalty_matches_transformers():
    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 3
    seqs = [seq(prompt=[1, 4, 4, 9], output=[11, 2], repetition_penalty=1.3),
            seq(prompt=[5], repetition_penalty=1.0),
            seq(prompt=[7, 8], output=[30, 31, 32, 7], repetition_penalty=0.7)]
    batch = SamplingBatch.from_sequences(seqs, 50, "cpu", [EOS])
    got = logits.clone()
    apply_penalties(got, batch.penalties)
    for row, s in enumerate(seqs):
        processor = RepetitionPenaltyLogitsProcessor(penalty=s.gen_config.repetition_penalty)
        want = processor(torch.tensor([s.token_ids]), logits[row : row + 1].clone())
        torch.testing.assert_close(got[row], want[0])


def test_presence_and_frequency_penalties_count_output_tokens():
    logits = torch.zeros(2, 10)
    penalised = seq(prompt=[3], output=[1, 1, 2])
    penalised.gen_config.presence_penalty = 0.5
    penalised.gen_config.frequency_penalty = 0.25
    batch = SamplingBatch.from_sequences([penalised, seq(output=[1])], 10, "cpu", [EOS])
    apply_penalties(logits, batch.penalties)
    want = torch.zeros(10)
    want[1] = -(0.5 + 2 * 0.25)
    want[2] = -(0.5 + 0.25)
    torch.testing.assert_close(logits[0], want)  # the prompt token 3 is not penalised
    assert not logits[1].any()


def test_bad_words_are_never_sampled():
    n = 512
    logits = torch.tensor([[0.0, 5.0, 4.0, 1.0, 1.0]] * n)
    seqs = [seq(random_seed=i, top_k=0, temperature=2.0, bad_token_ids=[1]) for i in range(n)]
    seqs[0] = seq(temperature=0.0, bad_token_ids=[1, 99])  # an id outside the vocabulary is moot

    class Words:
        def bad_word_ids(self, words):
            return [2] if words == ["two"] else []

    for s in seqs[1:]:
        s.gen_config.bad_words = ["two"]
    tokens = sample(seqs, logits, tokenizer=Words()).token_ids.tolist()
    assert tokens[0] == 2
    assert set(tokens[1:]) == {0, 3, 4}


def _unhash32(x: int) -> int:
    """The inverse of ``hash32`` on one value."""
    x ^= x >> 16
    x = (x * 0x43021123) & 0xFFFFFFFF
    x ^= (x >> 15) ^ (x >> 30)
    x = (x * 0x1D69E2A5) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_a_masked_token_never_wins_on_the_largest_random_number():
    # The key whose random number for token 3 is the largest one: its noise must stay above
    # 0, or the masked token's 0 / 0 = NaN would win the race.
    vocab, banned = 8, 3
    column = hash32(torch.tensor([banned])).item()
    assert hash32(torch.tensor([_unhash32(0xFFFFFFFF)])).item() == 0xFFFFFFFF
    logits = torch.zeros(1, vocab)
    batch = SamplingBatch.from_sequences([seq(top_k=0, bad_token_ids=[banned])], vocab, "cpu")
    batch.noise_keys = torch.tensor([_unhash32(0xFFFFFFFF) ^ column])
    assert Sampler().sample(logits, batch).token_ids.item() != banned


def test_min_new_tokens_masks_eos_and_stop_tokens_until_reached():
    logits = torch.tensor([[9.0, 0.0, 0.0, 0.0, 0.0, 8.0, 1.0]] * 3)
    seqs = [seq(output=[6, 6], temperature=0.0, min_new_tokens=3, stop_token_ids=[5]),
            seq(output=[6, 6, 6], temperature=0.0, min_new_tokens=3, stop_token_ids=[5]),
            seq(output=[6] * 9, temperature=0.0, ignore_eos=True, stop_token_ids=[5])]
    assert sample(seqs, logits).token_ids.tolist() == [6, EOS, 5]


def test_min_new_tokens_masks_single_token_stop_words():
    class Words:
        def stop_word_ids(self, words):
            return [4] if words == ["four"] else []

        def bad_word_ids(self, words):
            return []

    logits = torch.tensor([[0.0, 1.0, 0.0, 0.0, 9.0]])
    early = seq(temperature=0.0, min_new_tokens=1, stop_words=["four"])
    assert sample([early], logits, tokenizer=Words()).token_ids.tolist() == [1]


def test_logprobs_are_the_log_softmax_before_temperature():
    torch.manual_seed(0)
    logits = torch.randn(4, 40)
    seqs = [seq(temperature=0.0, logprobs=3),
            seq(top_k=0, temperature=0.3, random_seed=3, logprobs=0),
            seq(temperature=0.0),
            seq(top_k=5, temperature=1.0, random_seed=1, logprobs=5, bad_token_ids=[7],
                repetition_penalty=1.5)]
    original = logits.clone()
    out = sample(seqs, logits)
    assert torch.equal(logits, original)  # the caller's logits are untouched
    tokens = out.token_ids.tolist()
    assert out.logprobs[2] is None
    for row, k in ((0, 3), (1, 0), (3, 5)):
        processed = logits[row].clone()
        if row == 3:
            processed = RepetitionPenaltyLogitsProcessor(1.5)(
                torch.tensor([[1, 2, 3]]), processed[None])[0]
            processed[7] = float("-inf")
        ref = torch.log_softmax(processed, -1)
        entry = out.logprobs[row]
        ids = list(entry)
        assert ids[0] == tokens[row]
        assert entry[tokens[row]] == pytest.approx(ref[tokens[row]].item(), abs=1e-5)
        top = ref.topk(k).indices.tolist() if k else []
        assert set(ids[1:]) <= set(top) and set(top) <= set(ids)
        for token in top:
            assert entry[token] == pytest.approx(ref[token].item(), abs=1e-5)
    assert 7 not in out.logprobs[3] and len(out.logprobs[1]) == 1
