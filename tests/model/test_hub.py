"""Models named by a Hugging Face Hub id: offline from a cache laid out as huggingface_hub writes
it (typed at the CLI), and which files an online download fetches."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lmforge.errors import ModelLoadError
from lmforge.model import hub

REPO = "acme/tiny-chat"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHAT = [sys.executable, "-m", "lmforge.cli.main", "chat"]
QUICK = ["--max-new-tokens", "0", "--cache-max-entry-count", "64"]


def make_hub_cache(cache: Path, repo_id: str, source: Path, commit: str = COMMIT) -> Path:
    """``source``'s files in ``cache`` the way huggingface_hub stores a download: content in
    ``blobs/``, ``snapshots/<commit>/`` of relative links to them, ``refs/main`` naming it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in source.iterdir():
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, repo / "blobs" / blob)
        os.symlink(Path("..") / ".." / "blobs" / blob, snapshot / file.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


@pytest.fixture(scope="module")
def hub_cache(tiny_llama_dir, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("hub_cache")
    make_hub_cache(cache, REPO, tiny_llama_dir)
    return cache


def run_chat(*args: str, env: dict[str, str], text: str = "hi\n") -> subprocess.CompletedProcess:
    return subprocess.run([*CHAT, *args, *QUICK], input=text, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "2", **env})


def test_offline_chat_loads_a_hub_id_from_the_download_dir(hub_cache):
    run = run_chat(REPO, "--download-dir", str(hub_cache), env={"HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr
    assert run.stdout == "\n"  # one (empty) reply


def test_offline_chat_reads_the_default_cache_and_a_revision(hub_cache):
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache)}
    assert run_chat(REPO, "--revision", COMMIT, env=env).returncode == 0
    missing = run_chat(REPO, "--revision", "v9", env=env)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"Error: {REPO} at revision 'v9' is not in the model cache {hub_cache} and "
        "HF_HUB_OFFLINE is set; download it once while online, or pass a local model folder."
    )


def test_unreachable_hub_falls_back_to_the_cache(hub_cache):
    # Nothing listens on port 9: the Hub cannot be reached, as on a machine without a network.
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2"}
    run = run_chat(REPO, "--download-dir", str(hub_cache), "--trust-remote-code", env=env)
    assert run.returncode == 0, run.stderr
    assert "--trust-remote-code is not needed" in run.stderr


def test_model_not_in_the_cache_offline_is_one_sentence(hub_cache):
    run = run_chat("acme/missing", "--download-dir", str(hub_cache), env={"HF_HUB_OFFLINE": "1"})
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert run.stderr.strip().startswith("Error: acme/missing is not in the model cache")


def test_hub_snapshot_is_named_by_its_id(hub_cache):
    from lmforge.chat_template.model_files import ModelFiles
    from lmforge.cli.loading import model_source
    from lmforge.messages import PytorchEngineConfig

    source = model_source(REPO, None, PytorchEngineConfig(download_dir=str(hub_cache)))
    assert source.name == REPO and Path(source.path).parent.name == "snapshots"
    # The snapshot folder is named by a commit; template matching sees the id instead.
    assert ModelFiles.from_path(source.path).names == (REPO,)


@pytest.mark.parametrize("text,expected", [
    ("Qwen/Qwen2.5-0.5B-Instruct", True), ("acme/tiny-chat", True), ("gpt2", False),
    ("./models/x", False), ("/abs/path", False), ("~/model", False), ("a/b/c", False),
    ("model.gguf", False), ("../up", False),
])
def test_is_hub_id(text, expected):
    assert hub.is_hub_id(text) is expected


def test_download_fetches_configs_tokenizer_and_one_weight_format(monkeypatch, tmp_path):
    calls = {}

    class Info:
        siblings = [type("S", (), {"rfilename": f})() for f in (
            "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors", "model.safetensors.index.json",
            "pytorch_model.bin", "original/consolidated.00.pth", "README.md", "onnx/model.onnx",
        )]

    class FakeApi:
        def model_info(self, repo_id, revision=None, timeout=None):
            calls["info"] = (repo_id, revision)
            return Info()

    def fake_snapshot_download(repo_id, revision=None, cache_dir=None, allow_patterns=None, **kw):
        calls["download"] = (repo_id, revision, cache_dir, sorted(allow_patterns))
        return str(tmp_path)

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    assert hub.download_model(REPO, "main", "/cache") == tmp_path
    assert calls["info"] == (REPO, "main")
    assert calls["download"] == (REPO, "main", "/cache", [
        "chat_template.jinja", "config.json", "generation_config.json",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
    ])


def test_repository_of_several_ggufs_says_how_to_pick_one():
    with pytest.raises(ModelLoadError, match=r"holds 2 \.gguf files; download the one you want "
                       r"with `hf download acme/q FILE --local-dir DIR`"):
        hub._wanted("acme/q", ["README.md", "q4.gguf", "q8.gguf"])
    assert hub._wanted("acme/q", ["config.json", "q4.gguf"]) == ["config.json", "q4.gguf"]


def test_unknown_repository_is_one_sentence(monkeypatch):
    from huggingface_hub.errors import RepositoryNotFoundError

    class FakeApi:
        def model_info(self, *args, **kwargs):
            # The Hub's 404 for a repository; its constructor wants an HTTP response.
            error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
            Exception.__init__(error, "404 Repository Not Found")
            raise error

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    with pytest.raises(ModelLoadError, match="acme/nope is neither a local path nor a model on "
                       "the Hugging Face Hub"):
        hub.download_model("acme/nope")
