"""The batch sizes an engine captures decode CUDA graphs for, shared by every engine.

A decode step of ``n`` rows replays the graph of the smallest captured size that holds it, so
the rows in between are padding that the step still computes (every GEMM runs the padded
rows). Powers of two alone waste up to half a step; the sizes step by 8 to 32 rows up to 256
and by 64 rows above, so a batch in the hundreds pads by at most 64 rows (513 running rows
used to replay the 1,024-row graph and paid for twice their work).
"""

from __future__ import annotations

SMALL = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256)
STEP = 64  # above 256 rows


def decode_graph_sizes(max_batch_size: int) -> list[int]:
    """Ascending sizes to capture for a runner of ``max_batch_size`` rows; the last is always
    ``max_batch_size`` itself."""
    sizes = [b for b in SMALL if b < max_batch_size]
    sizes += range(SMALL[-1] + STEP, max_batch_size, STEP)
    return sizes + [max_batch_size]
