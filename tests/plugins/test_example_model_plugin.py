"""The example model plugin, installed for real with pip: before it, an OLMo 2 model is refused
in one sentence naming its architecture and the supported ones; with it, ``lmforge list`` shows
the architecture, ``lmforge chat`` runs the model, and its greedy tokens are transformers'."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lmforge-example-model"
DISTRIBUTION = "lmforge-example-model"
BIN = Path(sys.executable).parent
PROMPT = [1, 17, 42, 99, 5, 64, 23, 88, 11, 7, 120]

# Run in a fresh interpreter, which discovers the installed plugin through its entry point.
GREEDY = """
import json, sys
from lmforge import GenerationConfig, PytorchEngineConfig, pipeline
from lmforge.errors import ConfigError
path, prompt = sys.argv[1], json.loads(sys.argv[2])
config = PytorchEngineConfig(device="cpu", dtype="float32", cache_max_entry_count=64)
with pipeline(path, backend_config=config) as pipe:
    out = pipe([prompt], gen_config=GenerationConfig(max_new_tokens=12, ignore_eos=True))
try:
    pipeline(path, backend_config=PytorchEngineConfig(device="cpu", tp=2))
    refusal = None
except ConfigError as exc:
    refusal = str(exc)
print(json.dumps({"tokens": out[0].token_ids, "tp_refusal": refusal}))
"""


def _run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), input=stdin, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _chat(model: Path, check: bool = True) -> subprocess.CompletedProcess:
    return _run(str(BIN / "lmforge"), "chat", str(model), "--max-new-tokens", "6",
                "--temperature", "0", "--cache-max-entry-count", "64", stdin="hi\nquit\n",
                check=check)


def _pip(*args: str) -> None:
    _run(sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args)


@pytest.fixture
def olmo2(tmp_path, smollm2_tokenizer_dir):
    """A tiny random OLMo 2 with SmolLM2's tokenizer; and its transformers greedy tokens."""
    import torch
    from transformers import AutoTokenizer, Olmo2Config, Olmo2ForCausalLM

    torch.manual_seed(0)
    model = Olmo2ForCausalLM(Olmo2Config(
        vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=0))
    with torch.no_grad():  # norms away from 1, so that one the engine skipped would show
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.add_(torch.randn(param.shape) * 0.3)
    path = tmp_path / "olmo2"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(smollm2_tokenizer_dir).save_pretrained(path)
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        out = model.eval().generate(torch.tensor([PROMPT]), max_new_tokens=12, do_sample=False,
                                    pad_token_id=0)
    return path, out[0, len(PROMPT):].tolist()


@contextlib.contextmanager
def installed_plugin(folder: Path):
    """The plugin installed for the ``with`` block, built from a copy of the example (so the
    source tree gets no build/ or egg-info folders)."""
    source = folder / DISTRIBUTION
    shutil.copytree(EXAMPLE, source)
    _pip("install", "--no-deps", "--no-build-isolation", str(source))
    try:
        yield
    finally:
        _pip("uninstall", "-y", DISTRIBUTION)


def _refused(done: subprocess.CompletedProcess) -> bool:
    return (done.returncode != 0 and "Traceback" not in done.stderr
            and "Architecture 'Olmo2ForCausalLM'" in done.stderr
            and "supported architectures: Gemma2ForCausalLM" in done.stderr)


def test_model_plugin_install_chat_and_uninstall(olmo2, tmp_path):
    path, expected = olmo2
    assert _refused(_chat(path, check=False))

    with installed_plugin(tmp_path):
        listed = _run(str(BIN / "lmforge"), "list").stdout
        assert any(line.split()[:3] == ["Olmo2ForCausalLM", "engines:", "pytorch"]
                   for line in listed.splitlines())
        chat = _chat(path)
        assert chat.stdout.strip() and "Traceback" not in chat.stderr
        result = json.loads(_run(sys.executable, "-c", GREEDY, str(path),
                                 json.dumps(PROMPT)).stdout)
        assert result["tokens"] == expected
        assert "do not support tensor parallelism; use tp=1" in result["tp_refusal"]

    assert _refused(_chat(path, check=False))
