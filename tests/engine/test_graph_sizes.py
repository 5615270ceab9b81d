"""The decode graphs' batch sizes: every batch up to the maximum has a size that holds it, and
the padding a batch replays is bounded."""

import pytest
from lmforge.engine.graph_sizes import decode_graph_sizes


@pytest.mark.parametrize("max_batch", [1, 2, 7, 128, 256, 300, 512, 1000, 1024, 2048])
def test_every_batch_fits_with_bounded_padding(max_batch):
    sizes = decode_graph_sizes(max_batch)
    assert sizes == sorted(set(sizes)) and sizes[-1] == max_batch
    for n in range(1, max_batch + 1):
        size = next(s for s in sizes if s >= n)
        # A batch never replays twice its rows, and from 64 rows on at most 63 of padding.
        assert size - n < n
        assert n < 64 or size - n < 64


def test_sizes_between_512_and_1024():
    # A batch of 513 rows used to replay the 1,024-row graph.
    assert next(s for s in decode_graph_sizes(1024) if s >= 513) == 576
