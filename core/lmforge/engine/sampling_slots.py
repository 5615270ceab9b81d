"""Sampling parameters kept on the device per batch slot, written only where a slot changes hands.

A running sequence keeps its batch slot (``slots.BatchSlots``) for as long as it runs, and its
temperature, top-k, top-p, min-p and whether its end-of-sequence ids are banned
(``ignore_eos``) do not change meanwhile. So they are written into per-slot device tensors once,
the first step a sequence samples in its slot, and every step gathers its rows' parameters from
them by slot: the host sends the rows' slots (one copy) and the parameters of sequences new to
their slots, instead of every row's parameters every step.

A step with a row that needs more (banned ids or words, ``min_new_tokens``, penalties, logprobs,
a grammar) is gathered row by row by ``SamplingBatch.from_sequences``, as is a row without a
slot. Both give the same tensors, so the same tokens.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from .sampling_batch import (
    SamplingBatch,
    SamplingSequence,
    _default_rng,
    _noise_key,
    reads_output_tokens,
    row_top_k,
)
from .transfer import to_device

# Columns of the per-slot parameter table (float32: top-k values are exact below 2**24).
_TEMPERATURE, _TOP_K, _TOP_P, _MIN_P = range(4)


def _plain(seq: SamplingSequence) -> bool:
    """Whether the slot path can gather this sequence: nothing beyond its temperature, top-k,
    top-p, min-p, seed and ``ignore_eos``."""
    cfg = seq.gen_config
    return not (cfg.bad_token_ids or cfg.bad_words or cfg.min_new_tokens
                or cfg.logprobs is not None or reads_output_tokens(seq)
                or getattr(seq, "grammar", None) is not None)


class SlotSampling:
    """Builds each step's :class:`SamplingBatch` from per-slot device state."""

    def __init__(self, vocab_size: int, device: torch.device | str, eos_token_ids=(),
                 tokenizer: Any = None, rng: random.Random | None = None) -> None:
        self.vocab_size = vocab_size
        self.device = torch.device(device)
        self.eos_token_ids = list(eos_token_ids)
        self.tokenizer = tokenizer
        self.rng = rng
        eos = [t for t in dict.fromkeys(self.eos_token_ids) if 0 <= t < vocab_size]
        self._eos = to_device(eos, torch.long, self.device) if eos else None
        # Per slot, on the host: the sequence whose parameters the slot holds, and what the
        # step needs to decide on the host (which rows sample; top-k's largest value).
        self._owner: list[int] = []
        self._greedy: list[bool] = []
        self._top_k: list[int] = []
        self._top_p: list[float] = []
        self._min_p: list[float] = []
        self._ban: list[bool] = []
        self._params = torch.zeros(0, 4, dtype=torch.float32, device=self.device)
        self._ban_eos = torch.zeros(0, dtype=torch.bool, device=self.device)

    def batch(self, seqs: Sequence[SamplingSequence]) -> SamplingBatch:
        """The sampling parameters of ``seqs`` (one row each), as ``from_sequences`` gives."""
        slots = [getattr(s, "slot", -1) for s in seqs]
        if min(slots, default=0) < 0:
            return self._by_rows(seqs)
        # Rows already in their slots passed the _plain check when they were written (a running
        # sequence's configuration does not change), so only the new ones are checked.
        new = self._new_rows(seqs, slots)
        if not all(map(_plain, new)):
            return self._by_rows(seqs)
        if new:
            self._write(new)
        greedy = self._greedy
        sample = [row for row, slot in enumerate(slots) if not greedy[slot]]
        ban = self._eos is not None and any(self._ban[s] for s in slots)
        # The rows' slots go to the device only for a step that gathers from them.
        slot_t = to_device(slots, torch.long, self.device) if sample or ban else None
        temperature = top_k = top_p = min_p = keys = rows = None
        max_top_k, all_top_k = 0, False
        if sample:
            rows = to_device(sample, torch.long, self.device)
            sample_slots = [slots[row] for row in sample]
            params = self._params.index_select(0, slot_t.index_select(0, rows))
            temperature = params[:, _TEMPERATURE]
            ks = [self._top_k[s] for s in sample_slots]
            max_top_k, all_top_k = max(ks), min(ks) > 0
            top_k = params[:, _TOP_K].long() if max_top_k else None
            if any(self._top_p[s] < 1.0 for s in sample_slots):
                top_p = params[:, _TOP_P]
            if any(self._min_p[s] > 0.0 for s in sample_slots):
                min_p = params[:, _MIN_P]
            rng = self.rng or _default_rng
            keys = to_device([_noise_key(seqs[row], rng) for row in sample], torch.long,
                             self.device)
        ban_rows = self._ban_eos.index_select(0, slot_t) if ban else None
        return SamplingBatch(
            size=len(seqs), vocab_size=self.vocab_size, sample_rows=rows,
            temperature=temperature, top_k=top_k, max_top_k=max_top_k, all_top_k=all_top_k,
            top_p=top_p, min_p=min_p, noise_keys=keys, penalties=None, masked=None,
            logprobs_rows=[], logprobs_k=[], ban_rows=ban_rows,
            ban_ids=self._eos if ban_rows is not None else None)

    def _by_rows(self, seqs: Sequence[SamplingSequence]) -> SamplingBatch:
        kwargs = {"rng": self.rng} if self.rng is not None else {}
        return SamplingBatch.from_sequences(seqs, self.vocab_size, self.device,
                                            self.eos_token_ids, tokenizer=self.tokenizer,
                                            **kwargs)

    def _new_rows(self, seqs: Sequence[SamplingSequence], slots: list[int]) -> list:
        """The sequences whose slots hold another sequence's parameters (or none yet)."""
        owner, size = self._owner, len(self._owner)
        return [s for s, slot in zip(seqs, slots, strict=True)
                if slot >= size or owner[slot] != s.seq_id]

    def _write(self, seqs: list) -> None:
        """Put ``seqs``' parameters in their slots: the host lists, then one copy to the
        device."""
        top = max(s.slot for s in seqs)
        if top >= len(self._owner):
            self._grow(top + 1)
        table, bans = [], []
        for seq in seqs:
            cfg, slot = seq.gen_config, seq.slot
            k = row_top_k(cfg, self.vocab_size)
            self._owner[slot] = seq.seq_id
            self._greedy[slot] = cfg.greedy
            self._top_k[slot], self._top_p[slot], self._min_p[slot] = k, cfg.top_p, cfg.min_p
            self._ban[slot] = bool(cfg.ignore_eos)
            table.append([cfg.temperature, float(k), cfg.top_p, cfg.min_p])
            bans.append(bool(cfg.ignore_eos))
        index = to_device([s.slot for s in seqs], torch.long, self.device)
        self._params.index_copy_(0, index, to_device(table, torch.float32, self.device))
        self._ban_eos.index_copy_(0, index, to_device(bans, torch.bool, self.device))

    def _grow(self, needed: int) -> None:
        size = max(needed, 2 * len(self._owner), 16)
        extra = size - len(self._owner)
        self._owner += [-1] * extra
        self._greedy += [True] * extra
        self._top_k += [0] * extra
        self._top_p += [1.0] * extra
        self._min_p += [0.0] * extra
        self._ban += [False] * extra
        params = torch.zeros(size, 4, dtype=torch.float32, device=self.device)
        params[: self._params.shape[0]] = self._params
        ban = torch.zeros(size, dtype=torch.bool, device=self.device)
        ban[: self._ban_eos.shape[0]] = self._ban_eos
        self._params, self._ban_eos = params, ban
