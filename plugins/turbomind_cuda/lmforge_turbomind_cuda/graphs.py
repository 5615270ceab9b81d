"""Decode steps as CUDA graphs: one graph per bucketed batch size, each a capture of the single
native forward call over static input buffers.

All buckets are captured when the cache is allocated (the engine's warm-up). A batch larger than
the largest bucket, a prefill, or one that asks for every token's logits runs eagerly. Padding
rows get cache slot -1 (the K/V write skips them) and a one-token context; their logits are
dropped.
"""

from __future__ import annotations

import ctypes
import logging

import torch
from lmforge.engine.batch import ForwardBatch
from lmforge.engine.graph_sizes import decode_graph_sizes
from lmforge.engine.transfer import fill_prev_tokens, to_device

from .library import TmStep

logger = logging.getLogger(__name__)

class DecodeGraphs:
    """Captures the runner's native forward for decode batches, one graph per bucket."""

    def __init__(self, runner, max_batch_size: int, max_blocks: int) -> None:
        self.runner = runner
        self.buckets = decode_graph_sizes(max_batch_size)
        self.max_blocks = max_blocks
        device = runner.device
        n = self.buckets[-1]
        i32 = dict(dtype=torch.int32, device=device)
        self.input_ids = torch.zeros(n, dtype=torch.int64, device=device)
        self.positions = torch.zeros(n, **i32)
        self.slots = torch.full((n,), -1, **i32)
        self.kv_lens = torch.ones(n, **i32)
        self.q_starts = torch.arange(n + 1, **i32)
        self.logit_rows = torch.arange(n, **i32)
        self.block_tables = torch.zeros(n, max_blocks, **i32)
        vocab = runner.config.vocab_size
        self.logits = torch.empty(n, vocab, dtype=torch.float32, device=device)
        self.logits_lowp = torch.empty(n, vocab, dtype=runner.dtype, device=device)
        self.steps: dict[int, TmStep] = {}
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.replays = 0

    def _step(self, size: int) -> TmStep:
        return TmStep(
            num_tokens=size, num_seqs=size, num_decode=size,
            num_splits=self.runner.decode_splits(size), num_prefill_tiles=0, num_logits=size,
            block_table_stride=self.max_blocks, input_ids=self.input_ids.data_ptr(),
            positions=self.positions.data_ptr(), slots=self.slots.data_ptr(),
            block_tables=self.block_tables.data_ptr(), kv_lens=self.kv_lens.data_ptr(),
            q_starts=self.q_starts.data_ptr(), tile_seq=None, tile_start=None,
            logit_rows=self.logit_rows.data_ptr(), logits_lowp=self.logits_lowp.data_ptr(),
            logits=self.logits.data_ptr(),
        )

    def capture_all(self) -> None:
        """Capture every bucket, largest first; each runs once eagerly before its capture, so
        cuBLASLt picks its algorithms outside the capture."""
        for size in reversed(self.buckets):
            step = self.steps[size] = self._step(size)
            self.runner.forward(ctypes.byref(step))
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.runner.forward(ctypes.byref(step))
            self.graphs[size] = graph
        torch.cuda.synchronize(self.runner.device)
        logger.debug("captured decode graphs for batch sizes %s", self.buckets)

    def can_run(self, batch: ForwardBatch) -> bool:
        return (batch.is_decode and not batch.return_all_logits
                and batch.num_seqs <= self.buckets[-1]
                and max(len(t) for t in batch.block_tables) <= self.max_blocks)

    def run(self, batch: ForwardBatch) -> torch.Tensor:
        """Replay the graph of the smallest bucket that holds ``batch``; its logits rows."""
        n = batch.num_seqs
        size = next(b for b in self.buckets if b >= n)
        bs = batch.block_size
        positions = [kv - 1 for kv in batch.kv_lens]
        slots = [t[p // bs] * bs + p % bs for t, p in zip(batch.block_tables, positions,
                                                           strict=True)]
        width = max(len(t) for t in batch.block_tables)
        tables = [t + [0] * (width - len(t)) for t in batch.block_tables]
        device = self.runner.device
        self.input_ids[:n].copy_(to_device(batch.input_ids, torch.int64, device))
        fill_prev_tokens(self.input_ids, batch, list(range(n)))
        ints = to_device([positions, slots, batch.kv_lens], torch.int32, device)
        self.positions[:n].copy_(ints[0])
        self.slots[:n].copy_(ints[1])
        self.kv_lens[:n].copy_(ints[2])
        self.block_tables[:n, :width].copy_(to_device(tables, torch.int32, device))
        if size > n:  # rows of an earlier, larger batch: harmless padding again
            self.slots[n:size].fill_(-1)
            self.kv_lens[n:size].fill_(1)
            self.input_ids[n:size].zero_()
            self.positions[n:size].zero_()
        self.graphs[size].replay()
        self.replays += 1
        return self.logits[:n]
