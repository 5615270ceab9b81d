"""Batched token sampling on the logits' device.

One ``sample`` call handles a whole step: penalties, masks (banned tokens, then the grammar
bitmasks of constrained rows, filled on the host as the call starts), then argmax for greedy
rows and, for the others, temperature, top-k, top-p and min-p followed by an exponential race
(Gumbel-max in probability space). Nothing is read back to the host except the logprobs a request asked for.

Random numbers come from a counter-based hash of (row key, token id) rather than from
``torch.Generator`` objects: the key of a seeded request depends only on its seed and its output
length (see ``sampling_batch._noise_key``), so it is reproducible whatever else is in the batch,
after a preemption and across devices, with no per-sequence generator state to keep, and all rows
draw their noise in one batched operation instead of one kernel launch per seeded row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..structured.masks import MaskStaging, apply_bitmask
from .sampling_batch import Penalties, SamplingBatch
from .transfer import to_device

__all__ = ["Sampler", "SamplerOutput", "SamplingBatch"]

_MASK32 = 0xFFFFFFFF


@dataclass
class SamplerOutput:
    """The sampled token of each row, and the logprobs of the rows that asked for them.

    Everything stays on the logits' device until :meth:`start_copy` queues one transfer to the
    host; :meth:`host_token_ids` and :attr:`logprobs` then wait for that transfer alone, not for
    work queued on the device after it (the engine's next step).

    ``logprobs[row]`` is None for a row that did not ask, else ``{token_id: logprob}`` with the
    sampled token first, then the row's ``logprobs`` most likely tokens.
    """

    token_ids: torch.Tensor  # [B] long, on the logits' device
    logprob_ids: torch.Tensor | None = None  # [R, 1 + k] for the rows that asked, best last
    logprob_values: torch.Tensor | None = None
    logprobs_rows: list[int] = field(default_factory=list)
    logprobs_k: list[int] = field(default_factory=list)
    _host: list[torch.Tensor] | None = field(default=None, repr=False)
    _ready: torch.cuda.Event | None = field(default=None, repr=False)

    def start_copy(self) -> None:
        """Queue the copy of the results to pinned host memory behind the sampling kernels."""
        tensors = [self.token_ids]
        if self.logprob_ids is not None:
            tensors += [self.logprob_ids, self.logprob_values]
        if self.token_ids.device.type != "cuda":
            self._host = tensors
            return
        self._host = []
        for t in tensors:
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            host.copy_(t, non_blocking=True)
            self._host.append(host)
        self._ready = torch.cuda.Event()
        self._ready.record()

    def _wait(self) -> list[torch.Tensor]:
        if self._host is None:
            self.start_copy()
        if self._ready is not None:
            self._ready.synchronize()
        return self._host

    def host_token_ids(self) -> list[int]:
        """The sampled ids as a list; waits for this step's results only."""
        return self._wait()[0].tolist()

    @property
    def logprobs(self) -> list[dict[int, float] | None] | None:
        if self.logprob_ids is None:
            return None
        _, ids, values = self._wait()
        ids_list, values_list = ids.tolist(), values.tolist()
        out: list[dict[int, float] | None] = [None] * len(self.token_ids)
        for i, (row, k) in enumerate(zip(self.logprobs_rows, self.logprobs_k, strict=True)):
            out[row] = dict(zip(ids_list[i][: k + 1], values_list[i][: k + 1], strict=True))
        return out


class Sampler:
    """Turns a step's logits into next tokens. Stateless apart from cached column hashes and
    the host buffers grammar masks are filled in."""

    def __init__(self) -> None:
        self._column_hash: dict[tuple[int, torch.device], torch.Tensor] = {}
        self._masks = MaskStaging()

    def sample(self, logits: torch.Tensor, batch: SamplingBatch,
               inplace: bool = False) -> SamplerOutput:
        """Pick one token per row of ``logits`` ([B, V] float32). ``logits`` is not modified
        unless ``inplace`` (the engine owns its step's logits and saves the copy).

        Logprobs are the log-softmax of the logits after penalties and masks and before
        temperature, top-k, top-p and min-p: the model's own distribution over the tokens the
        request allows, independent of how it is sampled.
        """
        if (batch.penalties is not None or batch.masked is not None or batch.grammar is not None
                or batch.ban_rows is not None):
            if not (inplace and logits.is_contiguous()):
                logits = logits.clone(memory_format=torch.contiguous_format)
            if batch.penalties is not None:
                apply_penalties(logits, batch.penalties)
            if batch.masked is not None:
                # index_fill_ with a Python scalar needs no host-to-device copy, hence no sync.
                logits.view(-1).index_fill_(0, batch.masked, float("-inf"))
            if batch.ban_rows is not None:
                # Per row on the device, no sync: the banned columns of banned rows go to -inf.
                columns = logits[:, batch.ban_ids]
                logits[:, batch.ban_ids] = columns.masked_fill(batch.ban_rows[:, None],
                                                               float("-inf"))
            if batch.grammar is not None:
                apply_bitmask(logits, *batch.grammar.device_masks(logits.device, batch.size,
                                                                  self._masks))
        if batch.all_greedy:
            token_ids = logits.argmax(dim=-1)
        else:
            token_ids = self._sample_rows(logits, batch)
        out = SamplerOutput(token_ids)
        if batch.logprobs_rows:
            out.logprob_ids, out.logprob_values = _logprobs(logits, token_ids, batch)
            out.logprobs_rows, out.logprobs_k = batch.logprobs_rows, batch.logprobs_k
        return out

    def _sample_rows(self, logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
        rows = batch.sample_rows
        sampling_all = rows.numel() == batch.size
        x = logits if sampling_all else logits.index_select(0, rows)
        x = x / batch.temperature.unsqueeze(1)
        # Candidates, most likely first when top-p needs the order: only the top max_k tokens
        # when every row limits top_k (no full sort), else the whole sorted (or unsorted) vocab.
        candidate_ids = None
        if batch.all_top_k:
            x, candidate_ids = x.topk(batch.max_top_k, dim=-1)
        elif batch.top_p is not None:
            x, candidate_ids = x.sort(dim=-1, descending=True)
        if batch.top_k is not None:
            x = _limit_ranks(x, batch.top_k) if candidate_ids is not None else _top_k(
                x, batch.top_k, batch.max_top_k)
        if batch.top_p is not None:
            x = _top_p_sorted(x, batch.top_p)
        probs = torch.softmax(x, dim=-1)
        if batch.min_p is not None:
            threshold = batch.min_p.unsqueeze(1) * probs.amax(dim=-1, keepdim=True)
            probs = probs.masked_fill(probs < threshold, 0.0)
        # argmax(p / E) with E ~ Exp(1) draws from p (unnormalised p is fine).
        noise = self._exponential(batch.noise_keys, logits.shape[1], candidate_ids)
        choice = (probs / noise).argmax(dim=-1, keepdim=True)
        sampled = (choice if candidate_ids is None else candidate_ids.gather(1, choice)).squeeze(1)
        if sampling_all:
            return sampled
        token_ids = logits.argmax(dim=-1)
        return token_ids.index_copy_(0, rows, sampled)

    def _exponential(
        self, keys: torch.Tensor, vocab_size: int, token_ids: torch.Tensor | None
    ) -> torch.Tensor:
        """Exp(1) noise for each row's candidate tokens (all of them when ``token_ids`` is
        None): a function of (row key, token id) only, so the candidate order does not matter."""
        cache_key = (vocab_size, keys.device)
        columns = self._column_hash.get(cache_key)
        if columns is None:
            columns = hash32(torch.arange(vocab_size, dtype=torch.long, device=keys.device))
            self._column_hash[cache_key] = columns
        columns = columns.unsqueeze(0) if token_ids is None else columns[token_ids]
        bits = hash32(columns ^ keys.unsqueeze(1))
        # 23 bits plus the half step fill a float32 significand exactly, so u stays inside
        # (0, 1): with 24 bits the largest value rounds to 1.0, its noise is 0, and a token of
        # probability 0 (masked) would win the race as 0 / 0 = NaN.
        uniform = ((bits >> 9).to(torch.float32) + 0.5) * (1.0 / (1 << 23))
        return -torch.log(uniform)


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Wellons' "lowbias32" integer hash of int64 tensors holding values in [0, 2**32).

    Each product is split into 16-bit halves so that no intermediate overflows int64: the result
    is then exactly defined and the same on every device.
    """
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    low = x * (c & 0xFFFF)
    high = ((x * (c >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def apply_penalties(logits: torch.Tensor, p: Penalties) -> None:
    """Apply repetition (Hugging Face semantics) then presence and frequency (OpenAI semantics)
    penalties to ``logits`` in place."""
    if p.rep_rows is not None:
        rows = logits.index_select(0, p.rep_rows)
        seen = rows.gather(1, p.rep_tokens)
        penalty = p.repetition.unsqueeze(1)
        seen = torch.where(seen < 0, seen * penalty, seen / penalty)
        logits.index_copy_(0, p.rep_rows, rows.scatter(1, p.rep_tokens, seen))
    if p.freq_rows is not None:
        rows = logits.index_select(0, p.freq_rows)
        counts = torch.zeros_like(rows).scatter_add_(1, p.out_tokens, p.out_weights)
        rows -= p.frequency.unsqueeze(1) * counts + p.presence.unsqueeze(1) * (counts > 0)
        logits.index_copy_(0, p.freq_rows, rows)


def _top_k(x: torch.Tensor, top_k: torch.Tensor, max_top_k: int) -> torch.Tensor:
    """Keep each row's ``top_k`` largest logits (0 = all); ties with the k-th are kept."""
    values = x.topk(max_top_k, dim=-1).values
    kth = values.gather(1, (top_k.clamp(min=1) - 1).unsqueeze(1))
    kth = kth.masked_fill(top_k.unsqueeze(1) == 0, float("-inf"))
    return x.masked_fill(x < kth, float("-inf"))


def _limit_ranks(sorted_x: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Top-k on logits sorted in descending order (0 = no limit)."""
    ranks = torch.arange(sorted_x.shape[1], device=sorted_x.device).unsqueeze(0)
    limit = torch.where(top_k == 0, sorted_x.shape[1], top_k).unsqueeze(1)
    return sorted_x.masked_fill(ranks >= limit, float("-inf"))


def _top_p_sorted(sorted_x: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Top-p on logits sorted in descending order: keep the smallest set of most likely tokens
    whose probability reaches ``top_p`` (the first token always stays)."""
    probs = sorted_x.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    return sorted_x.masked_fill(mass_before >= top_p.unsqueeze(1), float("-inf"))


def _logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, batch: SamplingBatch
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and logprobs of each asking row's sampled token, then of its top ``max(k)`` tokens."""
    rows = to_device(batch.logprobs_rows, torch.long, logits.device)
    logp = torch.log_softmax(logits.index_select(0, rows), dim=-1)
    chosen = token_ids.index_select(0, rows).unsqueeze(1)
    ids, values = chosen, logp.gather(1, chosen)
    max_k = max(batch.logprobs_k)
    if max_k:
        top = logp.topk(max_k, dim=-1)
        ids = torch.cat([ids, top.indices], dim=1)
        values = torch.cat([values, top.values], dim=1)
    return ids, values
