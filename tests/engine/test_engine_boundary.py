"""A third-party engine plugin with its own config class is selectable everywhere an engine is,
and what an engine lacks is refused by its own declaration, naming the engine that has it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from lmforge import GenerationConfig, PytorchEngineConfig, pipeline, plugins
from lmforge.errors import ConfigError, PluginError

# The plugin as its author ships it: a module with the hook, installed with an entry point. Its
# engine is the pytorch runner under another name, with a config class and declaration of its own.
PLUGIN = '''
from dataclasses import dataclass

from lmforge import hookimpl
from lmforge.registry import EngineCapabilities, EngineSpec


@dataclass
class MirrorEngineConfig:
    """The mirror engine's own settings: LMDeploy's common names, and one of its own."""

    session_len: int | None = None
    max_batch_size: int = 8
    cache_max_entry_count: float = 64
    block_size: int = 16
    max_prefill_token_num: int = 256
    dtype: str = "auto"
    device: str = "cpu"
    load_format: str = "auto"
    model_name: str | None = None
    mirror_greeting: str = "hello"


@hookimpl
def register_engines(register):
    register(EngineSpec(
        name="mirror",
        runner="lmforge_torch_triton.runner:TorchModelRunner",
        config_class="mirror_engine:MirrorEngineConfig",
        capabilities=EngineCapabilities(
            architectures=("LlamaForCausalLM",), devices=("cpu",), dtypes=("float32",)),
        description="The pytorch runner under another name.",
        plugin="mirror_engine",
    ))
'''


@pytest.fixture(scope="module")
def mirror_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    (site / "mirror_engine.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "lmforge_mirror-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lmforge-mirror\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[lmforge]\nmirror_engine = mirror_engine\n")
    return site


@pytest.fixture
def mirror(mirror_site, monkeypatch):
    monkeypatch.syspath_prepend(str(mirror_site))
    plugins.reset()
    yield __import__("mirror_engine")
    plugins.reset()


def _env(site: Path) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (
        str(site), os.environ.get("PYTHONPATH")))), "OMP_NUM_THREADS": "2"}


def test_pipeline_by_name_and_by_config_class(mirror, tiny_llama_dir):
    cfg = GenerationConfig(max_new_tokens=6, ignore_eos=True)
    with pipeline(str(tiny_llama_dir), backend="mirror") as pipe:
        assert isinstance(pipe.engine.engine_config, mirror.MirrorEngineConfig)
        by_name = pipe([5, 6, 7, 8], gen_config=cfg).token_ids
    with pipeline(str(tiny_llama_dir), backend_config=mirror.MirrorEngineConfig(
            mirror_greeting="hi")) as pipe:
        assert pipe.engine.engine_config.mirror_greeting == "hi"
        assert pipe([5, 6, 7, 8], gen_config=cfg).token_ids == by_name
    with pipeline(str(tiny_llama_dir), backend_config=PytorchEngineConfig(
            dtype="float32", cache_max_entry_count=64)) as pipe:
        assert pipe([5, 6, 7, 8], gen_config=cfg).token_ids == by_name  # same runner


def test_another_engines_config_is_converted_by_field_name(mirror, tiny_llama_dir):
    config = PytorchEngineConfig(max_batch_size=3, block_size=16, cache_max_entry_count=64)
    with pipeline(str(tiny_llama_dir), backend="mirror", backend_config=config) as pipe:
        converted = pipe.engine.engine_config
        assert isinstance(converted, mirror.MirrorEngineConfig)
        assert (converted.max_batch_size, converted.block_size) == (3, 16)


def test_what_an_engine_lacks_is_refused_by_its_declaration(mirror, tiny_llama_dir):
    with pytest.raises(ConfigError, match="The mirror engine does not support dtype=bfloat16; "
                       r"the pytorch engine does \(--backend pytorch\)\."):
        pipeline(str(tiny_llama_dir), backend_config=mirror.MirrorEngineConfig(dtype="bfloat16"))
    with pytest.raises(ConfigError, match="The pytorch engine does not support tp=5; it "
                       "supports tp 1, 2, 3, 4, 6, 8."):
        pipeline(str(tiny_llama_dir), backend_config=PytorchEngineConfig(tp=5))
    with pytest.raises(PluginError, match="Engine 'mirorr' is not installed; installed engines: "
                       "mirror, pytorch."):
        pipeline(str(tiny_llama_dir), backend="mirorr")


def test_an_architecture_the_engine_does_not_run_names_the_one_that_does(mirror, tmp_path,
                                                                          tiny_llama_dir):
    import json
    import shutil

    qwen = tmp_path / "qwen"
    shutil.copytree(tiny_llama_dir, qwen)
    config = json.loads((qwen / "config.json").read_text())
    config.update(architectures=["Qwen2ForCausalLM"], model_type="qwen2")
    (qwen / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="The mirror engine does not run the Qwen2ForCausalLM "
                       r"architecture; the pytorch engine does \(--backend pytorch\)\."):
        pipeline(str(qwen), backend="mirror")


def _lmforge(*args: str, site: Path, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmforge.cli.main", *args], input=stdin,
                          capture_output=True, text=True, timeout=300, env=_env(site))


def test_chat_and_bench_take_the_plugin_engine(mirror_site, tiny_llama_dir, tmp_path):
    chat = _lmforge("chat", str(tiny_llama_dir), "--backend", "mirror", "--max-new-tokens", "4",
                    site=mirror_site, stdin="hello\n")
    assert chat.returncode == 0, chat.stderr
    report = tmp_path / "w4.json"
    bench = _lmforge("bench", "generation", str(tiny_llama_dir), "--backend", "mirror",
                     "--batch-size", "2", "--input-len", "8", "--output-len", "4", "--json",
                     str(report), site=mirror_site)
    assert bench.returncode == 0, bench.stderr
    assert report.is_file()
    flagged = _lmforge("chat", str(tiny_llama_dir), "--backend", "mirror", "--quant-policy", "8",
                       site=mirror_site, stdin="hello\n")
    assert flagged.returncode == 1
    assert "The mirror engine has no --quant-policy setting" in flagged.stderr
    assert "Traceback" not in flagged.stderr


def test_api_server_takes_the_plugin_engine(mirror_site, tiny_llama_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "serve"))
    from server_process import free_port, start_server, stop_server

    port = free_port()
    server = start_server(
        [sys.executable, "-m", "lmforge.cli.main", "serve", "api_server", str(tiny_llama_dir),
         "--backend", "mirror", "--server-name", "127.0.0.1", "--server-port", str(port)],
        port, tmp_path / "server.log", env=_env(mirror_site))
    try:
        body = {"model": tiny_llama_dir.name, "prompt": [5, 6, 7], "max_tokens": 3}
        reply = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] == 3
    finally:
        stop_server(server)
