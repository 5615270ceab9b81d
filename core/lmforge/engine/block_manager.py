"""The paged K/V cache's bookkeeping: which block holds which tokens, and the prefix cache.

The cache is a pool of ``num_blocks`` blocks of ``block_size`` tokens each (LMDeploy's
``cache_block_seq_len``); the runner owns the tensors, this module only hands out block ids.
A sequence's ``block_ids`` is its block table: block ``j`` holds its positions
``j * block_size`` … ``(j + 1) * block_size - 1``.

Prefix caching: once a block is full and its K/V computed, it is registered under a hash that
chains the previous block's hash with the block's token ids (the chain starts from the adapter
name, so requests of different LoRA adapters never share). A new sequence whose leading full
blocks hash the same reuses those blocks instead of recomputing them. Shared blocks are full, so
nobody ever writes into them and no copy-on-write is needed. A block whose last user leaves keeps
its K/V and hash and waits in an LRU list; it is recycled only when no never-hashed block is left.

Two things the manager does not need to know about: an interactive session keeps its K/V between
turns simply by not calling :meth:`BlockManager.free` (appending the next prompt and calling
:meth:`BlockManager.allocate` extends the same table), and int8/int4 K/V stores its scales beside
each block under the same block id.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict, deque

from .sequence import Sequence


def hash_block(parent: bytes, token_ids: list[int]) -> bytes:
    """The prefix-cache key of a full block: its tokens chained onto the previous block's key."""
    return hashlib.sha256(parent + array("q", token_ids).tobytes()).digest()


def root_hash(adapter: str | None) -> bytes:
    """The chain's start; it differs per adapter so LoRA requests never share K/V."""
    return hashlib.sha256(b"adapter:" + (adapter or "").encode()).digest()


class BlockManager:
    """Hands out K/V blocks to sequences, counts references, and keeps the prefix cache.

    A block is in exactly one of three states: in use (reference count > 0), free and never
    hashed (or its hash dropped), or free but cached (reference count 0, hash known, in the LRU).
    ``num_free_blocks`` counts both free kinds, since a cached block can be recycled at once.
    """

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {num_blocks}, {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._ref_counts = [0] * num_blocks
        self._hash_of: list[bytes | None] = [None] * num_blocks
        self._block_of: dict[bytes, int] = {}
        self._free: deque[int] = deque(range(num_blocks))
        # Free blocks with reusable K/V, least recently used first.
        self._cached: OrderedDict[int, None] = OrderedDict()
        # Per sequence holding blocks: how many of its leading blocks are registered (or were
        # matched), so commit() hashes each block once.
        self._num_committed: dict[int, int] = {}

    # ------------------------------------------------------------------ counts

    @property
    def num_free_blocks(self) -> int:
        return len(self._free) + len(self._cached)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    @property
    def num_cached_blocks(self) -> int:
        """Free blocks that still hold reusable prefix K/V."""
        return len(self._cached)

    def ref_count(self, block_id: int) -> int:
        """How many sequences hold ``block_id``."""
        return self._ref_counts[block_id]

    def num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ------------------------------------------------------------------ prefix matching

    def _block_hashes(self, seq: Sequence, num_full_blocks: int) -> list[bytes]:
        """``seq.block_hashes`` extended to cover its first ``num_full_blocks`` blocks."""
        hashes = seq.block_hashes
        bs = self.block_size
        parent = hashes[-1] if hashes else root_hash(seq.adapter)
        for j in range(len(hashes), num_full_blocks):
            parent = hash_block(parent, seq.token_slice(j * bs, (j + 1) * bs))
            hashes.append(parent)
        return hashes

    def _match_blocks(self, seq: Sequence) -> list[int]:
        """The cached blocks that hold the longest prefix of a sequence with no blocks yet."""
        if not seq.allow_prefix_match or seq.block_ids:
            return []
        # The last token is always computed, so the step has logits to sample from.
        max_blocks = (seq.num_tokens - 1) // self.block_size
        if max_blocks == 0 or not self._block_of:
            return []
        blocks = []
        for h in self._block_hashes(seq, max_blocks)[:max_blocks]:
            block = self._block_of.get(h)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def match(self, seq: Sequence) -> int:
        """How many leading tokens of a sequence without blocks the prefix cache holds.

        A read-only lookup; :meth:`allocate` takes the blocks. Always a multiple of
        ``block_size`` and less than ``seq.num_tokens``; 0 when caching is off.
        """
        return len(self._match_blocks(seq)) * self.block_size

    # ------------------------------------------------------------------ allocation

    def num_allocatable_tokens(self, seq: Sequence, reserve: int = 0) -> int:
        """How many tokens past what is computed (after a prefix match, for a sequence with no
        blocks yet) could get slots now, keeping ``reserve`` blocks free."""
        hits = self._match_blocks(seq)
        if hits:
            held, computed = len(hits), len(hits) * self.block_size
        else:
            held, computed = len(seq.block_ids), seq.num_computed
        # Matched blocks that sit in the LRU leave the free pool when taken.
        free = self.num_free_blocks - sum(1 for b in hits if self._ref_counts[b] == 0) - reserve
        return held * self.block_size - computed + max(free, 0) * self.block_size

    def can_allocate(self, seq: Sequence, num_new_tokens: int, reserve: int = 0) -> bool:
        """Whether :meth:`allocate` of ``num_new_tokens`` fits, leaving ``reserve`` blocks free."""
        return num_new_tokens <= self.num_allocatable_tokens(seq, reserve)

    def allocate(self, seq: Sequence, num_new_tokens: int) -> None:
        """Grow ``seq.block_ids`` so positions up to ``seq.num_computed + num_new_tokens`` have
        slots.

        On a sequence's first allocation (no blocks yet) with prefix caching, the longest cached
        prefix is taken first and ``seq.num_computed`` and ``seq.num_cached`` advance past it;
        ``num_new_tokens`` counts from there (size it with :meth:`match`). Check
        :meth:`can_allocate` first: running out of blocks here is a caller's bug.
        """
        if not self.can_allocate(seq, num_new_tokens):
            raise RuntimeError(
                f"sequence {seq.seq_id} needs slots for {num_new_tokens} tokens but only "
                f"{self.num_free_blocks} blocks are free"
            )
        if not seq.block_ids:
            hits = self._match_blocks(seq)
            for block in hits:
                if self._ref_counts[block] == 0:
                    del self._cached[block]
                self._ref_counts[block] += 1
            seq.block_ids = list(hits)
            seq.num_computed = seq.num_cached = len(hits) * self.block_size
            self._num_committed[seq.seq_id] = len(hits)
        needed = self.num_blocks_for(seq.num_computed + num_new_tokens) - len(seq.block_ids)
        seq.block_ids.extend(self._take_free_block() for _ in range(needed))

    def _take_free_block(self) -> int:
        if self._free:
            block = self._free.popleft()
        else:
            block, _ = self._cached.popitem(last=False)  # evict the least recently used
            del self._block_of[self._hash_of[block]]
            self._hash_of[block] = None
        self._ref_counts[block] = 1
        return block

    def commit(self, seq: Sequence) -> None:
        """Register the blocks that became full and computed since the last call (after a step
        advanced ``seq.num_computed``), so later sequences can reuse them."""
        start = self._num_committed.get(seq.seq_id, 0)
        if seq.num_computed < (start + 1) * self.block_size:
            return  # no block filled up since the last call
        # A block is registered once its tokens are known: a step's input may still be sampled.
        known = min(seq.num_computed, seq.num_tokens - seq.num_pending_tokens)
        num_full = min(known // self.block_size, len(seq.block_ids))
        if num_full <= start:
            return
        hashes = self._block_hashes(seq, num_full)
        for j in range(start, num_full):
            # Two sequences may have computed the same block side by side; the first keeps it.
            if hashes[j] not in self._block_of:
                block = seq.block_ids[j]
                self._block_of[hashes[j]] = block
                self._hash_of[block] = hashes[j]
        self._num_committed[seq.seq_id] = num_full

    def free(self, seq: Sequence) -> None:
        """Release a sequence's blocks (its K/V is gone: ``num_computed`` drops to 0)."""
        # Tail blocks first, so the LRU recycles the end of a prefix before its start.
        for block in reversed(seq.block_ids):
            self._ref_counts[block] -= 1
            if self._ref_counts[block] == 0:
                if self._hash_of[block] is None:
                    self._free.append(block)
                else:
                    self._cached[block] = None
        seq.block_ids = []
        seq.num_computed = 0
        self._num_committed.pop(seq.seq_id, None)

    def reset_prefix_cache(self) -> None:
        """Forget every hash (e.g. after new weights are loaded); blocks in use stay allocated."""
        self._block_of.clear()
        self._hash_of = [None] * self.num_blocks
        self._free.extend(self._cached)
        self._cached.clear()
