"""The sampling parameters of one step, gathered once into per-row device tensors.

Everything here is host-side bookkeeping that runs once per step; the ``Sampler`` then works on
these tensors without reading anything back from the device.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from ..messages import GenerationConfig
from ..structured.masks import GrammarRows
from .transfer import to_device


class SamplingSequence(Protocol):
    """What the sampler reads from a sequence (``engine.sequence.Sequence`` has it)."""

    seq_id: int
    gen_config: GenerationConfig
    prompt_ids: list[int]
    output_ids: list[int]
    grammar: Any  # structured.compiler.GrammarState, or None


@dataclass
class Penalties:
    """Repetition, presence and frequency penalties of the rows that have one.

    ``rep_tokens`` holds each row's prompt and output tokens, padded by repeating a token of the
    row (penalising a token twice writes the same value twice). ``out_tokens`` holds the output
    tokens padded with id 0 and ``out_weights`` is 1 for real tokens, 0 for padding.
    """

    rep_rows: torch.Tensor | None = None  # [R] rows with repetition_penalty != 1
    rep_tokens: torch.Tensor | None = None  # [R, L]
    repetition: torch.Tensor | None = None  # [R]
    freq_rows: torch.Tensor | None = None  # [F] rows with a presence or frequency penalty
    out_tokens: torch.Tensor | None = None  # [F, L]
    out_weights: torch.Tensor | None = None  # [F, L]
    presence: torch.Tensor | None = None  # [F]
    frequency: torch.Tensor | None = None  # [F]


@dataclass
class SamplingBatch:
    """Per-row sampling parameters of one step, on the logits' device.

    Rows follow the order of the sequences given to ``from_sequences``. The ``sample_*`` tensors
    cover only the rows that sample (``sample_rows``); the other rows take the argmax.
    """

    size: int
    vocab_size: int
    sample_rows: torch.Tensor | None  # [S] long; None when every row is greedy
    temperature: torch.Tensor | None  # [S]
    top_k: torch.Tensor | None  # [S] long, 0 = no limit; None when no row limits it
    max_top_k: int
    all_top_k: bool  # every sampling row has a top_k limit: sampling can skip the full vocabulary
    top_p: torch.Tensor | None  # [S]; None when every row has top_p == 1
    min_p: torch.Tensor | None  # [S]; None when every row has min_p == 0
    noise_keys: torch.Tensor | None  # [S] long in [0, 2**32): the random stream of each row
    penalties: Penalties | None
    masked: torch.Tensor | None  # row * vocab_size + token of each masked token (bad, EOS, stop)
    logprobs_rows: list[int]  # rows that asked for logprobs, and how many top entries each
    logprobs_k: list[int]
    # Constrained rows; their masks are filled when the sampler runs (after the forward is
    # queued, so the host fills them while the device computes the logits).
    grammar: GrammarRows | None = None
    # Rows whose ``ban_ids`` (end-of-sequence ids, for ``ignore_eos``) may not be picked: [B]
    # bool, gathered on the device by ``sampling_slots.SlotSampling``; None when no row bans.
    ban_rows: torch.Tensor | None = None
    ban_ids: torch.Tensor | None = None  # [E] long

    @property
    def all_greedy(self) -> bool:
        return self.sample_rows is None

    @classmethod
    def from_sequences(
        cls,
        seqs: Sequence[SamplingSequence],
        vocab_size: int,
        device: torch.device | str,
        eos_token_ids: Iterable[int] = (),
        tokenizer: Any = None,
        rng: random.Random | None = None,
    ) -> SamplingBatch:
        """Gather the sampling parameters of ``seqs`` (one row each).

        :param vocab_size: width of the logits; token ids outside it are never produced, so
            masks drop them.
        :param eos_token_ids: ids masked while ``min_new_tokens`` is not reached, or always with
            ``ignore_eos``.
        :param tokenizer: when given, ``bad_words`` and ``stop_words`` that are single tokens are
            masked too (``Tokenizer.bad_word_ids`` / ``stop_word_ids``), besides
            ``bad_token_ids`` / ``stop_token_ids``.
        :param rng: source of the random streams of rows without ``random_seed``; give a seeded
            one to make the whole engine reproducible.
        """
        rng = rng or _default_rng
        eos = list(eos_token_ids)
        configs = [s.gen_config for s in seqs]
        sample = [i for i, cfg in enumerate(configs) if not cfg.greedy]

        def on_device(values: list, dtype: torch.dtype) -> torch.Tensor:
            return to_device(values, dtype, device)

        temperature = top_k = top_p = min_p = keys = rows = None
        max_top_k, all_top_k = 0, False
        if sample:
            cfgs = [configs[i] for i in sample]
            rows = on_device(sample, torch.long)
            temperature = on_device([c.temperature for c in cfgs], torch.float32)
            ks = [row_top_k(c, vocab_size) for c in cfgs]
            max_top_k, all_top_k = max(ks), min(ks) > 0
            top_k = on_device(ks, torch.long) if max_top_k else None
            if any(c.top_p < 1.0 for c in cfgs):
                top_p = on_device([c.top_p for c in cfgs], torch.float32)
            if any(c.min_p > 0.0 for c in cfgs):
                min_p = on_device([c.min_p for c in cfgs], torch.float32)
            keys = on_device([_noise_key(seqs[i], rng) for i in sample], torch.long)

        masked = _masked_tokens(seqs, vocab_size, eos, tokenizer)
        logprobs_rows = [i for i, cfg in enumerate(configs) if cfg.logprobs is not None]
        constrained = [i for i, s in enumerate(seqs) if getattr(s, "grammar", None) is not None]
        grammar = GrammarRows(constrained, [seqs[i].grammar for i in constrained]) if (
            constrained) else None
        return cls(
            size=len(seqs),
            vocab_size=vocab_size,
            sample_rows=rows,
            temperature=temperature,
            top_k=top_k,
            max_top_k=max_top_k,
            all_top_k=all_top_k,
            top_p=top_p,
            min_p=min_p,
            noise_keys=keys,
            penalties=_penalties(seqs, on_device),
            masked=on_device(masked, torch.long) if masked else None,
            logprobs_rows=logprobs_rows,
            logprobs_k=[configs[i].logprobs for i in logprobs_rows],
            grammar=grammar,
        )


_default_rng = random.Random()
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _noise_key(seq: SamplingSequence, rng: random.Random) -> int:
    """The 32-bit key of this row's random numbers at this step.

    A seeded request's key depends only on its seed and on how many tokens it has generated, so
    it samples the same tokens whatever else shares the batch, after a preemption, and on any
    device. Other rows draw a fresh key from ``rng``.
    """
    seed = seq.gen_config.random_seed
    if seed is None:
        return rng.getrandbits(32)
    return _splitmix64(_splitmix64(seed & _MASK64) ^ len(seq.output_ids)) >> 32


def _masked_tokens(
    seqs: Sequence[SamplingSequence], vocab_size: int, eos: list[int], tokenizer: Any
) -> list[int]:
    """Flat indices into the [B, V] logits of the tokens each row may not pick now."""
    masked: list[int] = []
    for row, seq in enumerate(seqs):
        cfg = seq.gen_config
        banned = list(cfg.bad_token_ids or ())
        if tokenizer is not None and cfg.bad_words:
            banned += tokenizer.bad_word_ids(cfg.bad_words)
        # A grammar decides where its reply may end (an end of sequence once complete, and
        # nothing else then): ignore_eos and min_new_tokens yield to it.
        free = getattr(seq, "grammar", None) is None
        short = free and len(seq.output_ids) < (cfg.min_new_tokens or 0)
        if short or (free and cfg.ignore_eos):
            banned += eos
        if short:
            banned += cfg.stop_token_ids or ()
            if tokenizer is not None and cfg.stop_words:
                banned += tokenizer.stop_word_ids(cfg.stop_words)
        for token in dict.fromkeys(banned):
            if 0 <= token < vocab_size:
                masked.append(row * vocab_size + token)
    return masked


def row_top_k(cfg: GenerationConfig, vocab_size: int) -> int:
    """A row's top-k limit as the sampler takes it: 0 (no limit) unless below the vocabulary."""
    return cfg.top_k if 0 < cfg.top_k < vocab_size else 0


def _penalties(seqs: Sequence[SamplingSequence], on_device) -> Penalties | None:
    rep = [
        (row, s) for row, s in enumerate(seqs)
        if s.gen_config.repetition_penalty != 1.0 and (s.prompt_ids or s.output_ids)
    ]
    freq = [
        (row, s) for row, s in enumerate(seqs)
        if s.output_ids and (s.gen_config.presence_penalty or s.gen_config.frequency_penalty)
    ]
    if not rep and not freq:
        return None
    out = Penalties()
    if rep:
        history = [s.prompt_ids + s.output_ids for _, s in rep]
        width = max(len(h) for h in history)
        out.rep_rows = on_device([row for row, _ in rep], torch.long)
        out.rep_tokens = on_device([h + [h[0]] * (width - len(h)) for h in history], torch.long)
        out.repetition = on_device([s.gen_config.repetition_penalty for _, s in rep], torch.float32)
    if freq:
        width = max(len(s.output_ids) for _, s in freq)
        outputs = [s.output_ids for _, s in freq]
        out.freq_rows = on_device([row for row, _ in freq], torch.long)
        out.out_tokens = on_device([o + [0] * (width - len(o)) for o in outputs], torch.long)
        out.out_weights = on_device(
            [[1.0] * len(o) + [0.0] * (width - len(o)) for o in outputs], torch.float32
        )
        out.presence = on_device([s.gen_config.presence_penalty for _, s in freq], torch.float32)
        out.frequency = on_device([s.gen_config.frequency_penalty for _, s in freq], torch.float32)
    return out


def reads_output_tokens(seq: SamplingSequence) -> bool:
    """Whether sampling this sequence reads its earlier token values on the device (penalties
    do), so they must all be known when its step is queued. A grammar's mask needs them too,
    but only on the host when the step samples: such a step queues its forward first."""
    cfg = seq.gen_config
    return cfg.repetition_penalty != 1.0 or bool(cfg.presence_penalty or cfg.frequency_penalty)

