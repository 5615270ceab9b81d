"""CUDA graphs for decode steps: one graph per bucketed batch size, replayed over static buffers.

All buckets are captured when the cache is allocated (the engine's warm-up); a batch larger
than the largest bucket, or a prefill, runs eagerly.

A decode step of a large model launches hundreds of small kernels; launched from Python, their
overhead exceeds the GPU time at small batches. A captured graph replays them with one launch.
The step's per-row numbers reach the device in one copy, and the static buffers (sized for the
largest bucket) are filled from them on the device: block-table rows gathered from the runner's
resident tables by slot, positions and cache slots computed. Padded rows get cache slot -1 (the
K/V write skips them) and a one-token context, and their logits are dropped.
"""

from __future__ import annotations

import logging

import torch
from lmforge.engine.batch import ForwardBatch
from lmforge.engine.graph_sizes import decode_graph_sizes

from .block_table import DeviceBlockTables
from .inputs import StepInputs, cache_slots, fill_pending, table_of, upload_rows

logger = logging.getLogger(__name__)

class DecodeGraphs:
    """Captures ``forward`` for decode batches lazily, one graph per bucket, sharing one pool."""

    def __init__(self, forward, kv_caches, max_batch_size: int, max_blocks: int,
                 device: torch.device):
        self.forward = forward
        self.kv_caches = kv_caches
        self.buckets = decode_graph_sizes(max_batch_size)
        self.max_blocks = max_blocks
        self.device = device
        n = self.buckets[-1]
        i64, i32 = dict(dtype=torch.int64, device=device), dict(dtype=torch.int32, device=device)
        self.input_ids = torch.zeros(n, **i64)
        self.positions = torch.zeros(n, **i64)
        self.slot_mapping = torch.full((n,), -1, **i64)
        self.block_tables = torch.zeros(n, max_blocks, **i32)
        self.kv_lens = torch.ones(n, **i32)
        self.cu_q_lens = torch.arange(n + 1, **i32)
        self.logit_rows = torch.arange(n, **i64)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self.replays = 0

    def capture_all(self) -> None:
        """Capture every bucket now, largest first so the smaller graphs reuse its memory pool;
        the engine's warm-up, so no request pays for a capture."""
        for size in reversed(self.buckets):
            if size not in self.graphs:
                self.graphs[size] = self._capture(size)
        torch.cuda.synchronize(self.device)

    def can_run(self, batch: ForwardBatch) -> bool:
        return (batch.is_decode and not batch.return_all_logits
                and batch.num_seqs <= self.buckets[-1]
                and -(-max(batch.kv_lens) // batch.block_size) <= self.max_blocks)

    def _inputs(self, size: int) -> StepInputs:
        return StepInputs(
            input_ids=self.input_ids[:size],
            positions=self.positions[:size],
            slot_mapping=self.slot_mapping[:size],
            block_tables=self.block_tables[:size],
            kv_lens=self.kv_lens[:size],
            cu_q_lens=self.cu_q_lens[: size + 1],
            logit_rows=self.logit_rows[:size],
            is_decode=True,
            kv_lens_host=[],
            q_lens_host=[],
        )

    def _capture(self, size: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        inputs = self._inputs(size)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # warm-up: Triton compiles and autotunes outside capture
            self.forward(inputs, self.kv_caches)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # Thread-local: other threads (NCCL's watchdog with tensor parallelism) may query the
        # device while this one captures.
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            logits = self.forward(inputs, self.kv_caches)
        logger.debug("captured a decode graph for batch %d", size)
        return graph, logits

    def run(self, batch: ForwardBatch, tables: DeviceBlockTables | None = None) -> torch.Tensor:
        """Replay the graph of the smallest bucket that holds ``batch``; its logits rows, a view
        of the graph's static output that the bucket's next replay overwrites (the engine
        queues each step's sampling before the next step; a caller that keeps logits longer
        copies them). ``tables`` are the runner's resident block tables, used when the batch
        names slots."""
        n = batch.num_seqs
        size = next(b for b in self.buckets if b >= n)
        rows = upload_rows(batch, self.device)
        table = table_of(batch, tables, self.device)
        if rows.slots is not None:
            torch.index_select(table[:, : self.max_blocks], 0, rows.slots,
                               out=self.block_tables[:n])
        else:
            self.block_tables[:n, : table.shape[1]].copy_(table)
        self.input_ids[:n].copy_(rows.input_ids)
        # logit_rows is 0..n-1: row i's one token is token i.
        fill_pending(self.input_ids, self.logit_rows[:n], rows, batch.prev_tokens)
        self.kv_lens[:n].copy_(rows.kv_lens)
        positions = self.positions[:n]
        torch.sub(rows.kv_lens, 1, out=positions)
        self.slot_mapping[:n].copy_(cache_slots(self.block_tables, self.logit_rows[:n],
                                                positions, batch.block_size))
        if size > n:  # rows of an earlier, larger batch: make them harmless padding again
            self.slot_mapping[n:size].fill_(-1)
            self.kv_lens[n:size].fill_(1)
            self.input_ids[n:size].zero_()
            self.positions[n:size].zero_()
        if size not in self.graphs:
            self.graphs[size] = self._capture(size)
        graph, logits = self.graphs[size]
        graph.replay()
        self.replays += 1
        return logits[:n]
