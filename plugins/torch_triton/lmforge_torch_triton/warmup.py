"""Start-up steps that compile every kernel specialization a request can meet.

Triton compiles a kernel the first time it sees a new combination of constexpr values and of
its integer arguments' classes (1, a multiple of 16, anything else), so the first request to
need one would wait seconds for it. Decode steps are compiled when their CUDA graphs are
captured; these warm-up steps cover the rest: prefills of several lengths and block-table widths,
a mixed step of decodes beside a prompt chunk, and a scoring step that returns every token's
logits. They write K/V into pool blocks no sequence owns yet. Compiled kernels land in Triton's
on-disk cache, so later start-ups load them instead.
"""

from __future__ import annotations

import logging
import time

from lmforge.engine.batch import ForwardBatch

logger = logging.getLogger(__name__)

# (query tokens, context tokens) of each sequence of a warm-up step: lengths of 1, 16 and 17
# tokens and contexts whose block tables are 1, 2, 16 and 17 blocks wide (at 64-token blocks);
# Triton specializes integer arguments equal to 1 or divisible by 16, so counts of sequences and
# tokens take each of those classes. Kernels still compiled later are logged (compile_watch).
WARMUP_STEPS = (
    ((17, 17),),
    ((16, 16),),
    ((1, 100), (1, 5), (33, 33)),  # decodes beside a prompt
    ((1, 70), (20, 20)),  # one decode beside a prompt: the common step of light traffic
    tuple([(1, 40)] * 16) + ((48, 48),),  # sixteen decodes beside a prompt
    tuple([(1, 1100)] * 15) + ((40, 40),),  # sixteen rows of logits
    ((5, 5), (9, 9), (100, 100)),  # several prompts at once
    ((16, 1024), (32, 1088)),  # chunks continuing long prompts
    ((128, 128), (1, 1), (257, 257)),
)


def warm_up(execute, block_size: int, num_blocks: int, max_blocks: int, max_step_tokens: int,
            vocab_size: int) -> None:
    """Run :data:`WARMUP_STEPS` (the ones that fit the pool and the step budget) and one scoring
    step through ``execute``, with token ids below ``vocab_size``."""
    start = time.perf_counter()
    ran = 0
    for step in WARMUP_STEPS:
        batch = _batch(step, block_size, num_blocks, max_blocks, vocab_size)
        if batch is None or batch.num_tokens > max_step_tokens:
            continue
        execute(batch)
        ran += 1
    scoring = _batch(((17, 17),), block_size, num_blocks, max_blocks, vocab_size)
    if scoring is not None:
        scoring.return_all_logits = True
        execute(scoring)
    logger.info("warm-up: %d steps in %.1f s", ran + 1, time.perf_counter() - start)


def _batch(step, block_size: int, num_blocks: int, max_blocks: int,
           vocab_size: int) -> ForwardBatch | None:
    ids, q_lens, kv_lens, tables = [], [], [], []
    next_block = 0
    for q_len, kv_len in step:
        width = -(-kv_len // block_size)
        if width > max_blocks or next_block + width > num_blocks:
            return None
        tables.append(list(range(next_block, next_block + width)))
        next_block += width
        ids += [(7 * i + 3) % vocab_size for i in range(q_len)]
        q_lens.append(q_len)
        kv_lens.append(kv_len)
    return ForwardBatch(input_ids=ids, q_lens=q_lens, kv_lens=kv_lens, block_tables=tables,
                        need_logits=[True] * len(step), block_size=block_size)
