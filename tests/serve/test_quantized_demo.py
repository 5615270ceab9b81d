"""The demo model quantized by `lmforge lite` at a reduced size (few, short samples), then chatted
with and served: the whole flow a user runs, on the CPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from server_process import lmforge_server

pytestmark = pytest.mark.slow

QUESTION = "What is the capital of France?"
# Calibration text that changes only with this test (the answer below depends on it).
CALIB = Path(__file__).resolve().parents[1] / "data" / "calibration.txt"
RUNS = {
    "awq": ["auto_awq", "--w-group-size", "64"],
    "w8a8": ["smooth_quant"],
}


@pytest.fixture(scope="module", params=sorted(RUNS))
def quantized(request, smollm2_gguf, tmp_path_factory):
    base = tmp_path_factory.mktemp(request.param)
    command, *flags = RUNS[request.param]
    out = base / "model"
    done = subprocess.run(
        [sys.executable, "-m", "lmforge.cli.main", "lite", command, str(smollm2_gguf),
         "--work-dir", str(out), "--device", "cpu", "--calib-dataset", str(CALIB),
         "--calib-samples", "2", "--calib-seqlen", "32", *flags],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "config.json").is_file() and (out / "chat_template.jinja").is_file()
    return request.param, out


def test_chat_answers(quantized):
    name, out = quantized
    done = subprocess.run(
        [sys.executable, "-m", "lmforge.cli.main", "chat", str(out), "--device", "cpu",
         "--max-new-tokens", "24", "--temperature", "0"],
        input=f"{QUESTION}\n", capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
    if name == "awq":
        assert "Paris" in done.stdout


def test_api_server_answers(quantized, tmp_path):
    name, out = quantized
    for server in lmforge_server(tmp_path, str(out), "--device", "cpu", "--model-name", name,
                                 "--cache-max-entry-count", "256"):
        reply = httpx.post(f"{server.url}/v1/chat/completions", timeout=120, json={
            "model": name, "max_tokens": 24, "temperature": 0,
            "messages": [{"role": "user", "content": QUESTION}]}).json()
        text = reply["choices"][0]["message"]["content"]
        assert text.strip()
        if name == "awq":
            assert "Paris" in text
