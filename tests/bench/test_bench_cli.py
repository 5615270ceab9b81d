"""``lmforge bench generation`` and ``throughput`` on the CPU with the tiny random-weight model."""

from __future__ import annotations

import json

import pytest
from lmforge.cli.app import create_app
from typer.testing import CliRunner


def invoke(*args: str):
    result = CliRunner().invoke(create_app(), ["bench", *args])
    assert result.exit_code == 0, result.output
    return result


def test_generation_reports_each_batch_size(tiny_model, tmp_path):
    out = tmp_path / "gen.json"
    result = invoke("generation", str(tiny_model), "--batch-size", "1", "3", "--input-len", "8",
                    "--output-len", "5", "--device", "cpu", "--json", str(out))
    report = json.loads(out.read_text())
    assert "no weights" in result.output
    assert report["benchmark"] == "generation" and report["device"].startswith("cpu")
    assert report["settings"]["engine"]["load_format"] == "dummy"
    assert report["settings"]["engine"]["max_batch_size"] == 3
    assert [row["batch_size"] for row in report["rows"]] == [1, 3]
    for row in report["rows"]:
        assert row["generated_tokens"] == row["batch_size"] * 5  # EOS ignored: exact lengths
        assert row["output_tok_s"] == pytest.approx(row["generated_tokens"] / row["elapsed_s"])
        assert 0 < row["first_token_latency_s"] <= row["elapsed_s"]


def test_throughput_synthetic_counts_every_token(tiny_model, tmp_path):
    out = tmp_path / "tp.json"
    invoke("throughput", str(tiny_model), "--dataset", "synthetic", "--num-prompts", "6",
           "--input-len", "10", "--output-len", "4", "--device", "cpu", "--json", str(out))
    row = json.loads(out.read_text())["rows"][0]
    assert (row["num_requests"], row["input_tokens"], row["output_tokens"]) == (6, 60, 24)
    assert row["request_s"] == pytest.approx(6 / row["elapsed_s"])
    assert row["total_tok_s"] == pytest.approx(84 / row["elapsed_s"])


@pytest.mark.parametrize("kv_tokens, preempted", [("1024", False), ("64", True)])
def test_throughput_counts_steps_and_preemptions(tiny_model, tmp_path, kv_tokens, preempted):
    # Six requests of 10 + 40 tokens in 16-token blocks: 4 blocks each. A pool of 1,024 tokens
    # holds them all, and they run together (one prefill step, then 39 decodes); one of 64 holds
    # one whole request, so newer ones are preempted as the oldest grows, and it takes more steps.
    out = tmp_path / "tp.json"
    invoke("throughput", str(tiny_model), "--dataset", "synthetic", "--num-prompts", "6",
           "--input-len", "10", "--output-len", "40", "--session-len", "64",
           "--cache-block-seq-len", "16", "--max-kv-tokens", kv_tokens, "--device", "cpu",
           "--json", str(out))
    row = json.loads(out.read_text())["rows"][0]
    assert row["output_tokens"] == 6 * 40
    if preempted:
        assert row["preemptions"] > 0 and row["steps"] > 2 * 40
    else:
        assert (row["preemptions"], row["steps"]) == (0, 40)


def test_throughput_reads_a_users_sharegpt_file(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    convs = [{"conversations": [{"from": "human", "value": f"Tell me about topic number {i}."},
                                {"from": "gpt", "value": "Here are a few words about it. " * (i + 1)}]}
             for i in range(5)]
    data = tmp_path / "mine.json"
    data.write_text(json.dumps(convs))
    out = tmp_path / "tp.json"
    invoke("throughput", str(tiny_model), "--dataset", str(data), "--num-prompts", "3",
           "--tokenizer", str(tiny_model), "--device", "cpu", "--json", str(out))
    row = json.loads(out.read_text())["rows"][0]
    assert row["num_requests"] == 3 and row["output_tokens"] > 3 * 4
    assert list((tmp_path / "cache" / "bench").glob("sharegpt-*.json"))


def test_batch_sizes_before_the_model_path_are_a_list(tiny_model, tmp_path):
    # LMDeploy's spelling: the sizes are space-separated and may come before the model path.
    out = tmp_path / "gen.json"
    invoke("generation", "--batch-size", "2", "1", str(tiny_model), "--input-len", "4",
           "--output-len", "2", "--warmup", "0", "--device", "cpu", "--json", str(out))
    assert [row["batch_size"] for row in json.loads(out.read_text())["rows"]] == [2, 1]


def test_batch_size_below_one_is_one_sentence(tiny_model):
    result = CliRunner().invoke(create_app(), ["bench", "generation", str(tiny_model),
                                               "--batch-size", "0", "--device", "cpu"])
    assert result.exit_code == 1
    assert "Invalid value for --batch-size: [0]; give numbers of 1 or more." in result.output
