"""max_batch_size left unset is chosen for the device where the engine runs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lmforge.engine import settings as settings_module
from lmforge.engine.builder import build_llm_engine
from lmforge.engine.settings import EngineSettings, default_max_batch_size, with_max_batch_size
from lmforge.messages import PytorchEngineConfig, TurbomindEngineConfig


def _fake_gpu(monkeypatch, gib: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index: SimpleNamespace(total_memory=gib * 2**30))


def test_cpu_default_is_128():
    assert default_max_batch_size("cpu") == 128


@pytest.mark.parametrize(("gib", "batch", "served"), [
    (141, 256, 1024), (79, 256, 1024), (70, 256, 1024), (69, 256, 256), (40, 256, 256),
    (24, 128, 128), (16, 128, 128)])
def test_gpu_default_follows_its_memory_and_use(monkeypatch, gib, batch, served):
    _fake_gpu(monkeypatch, gib)
    assert default_max_batch_size("auto") == batch
    assert default_max_batch_size("cuda:0") == batch
    assert default_max_batch_size("cuda:0", serving=True) == served
    assert default_max_batch_size("cpu") == 128
    assert default_max_batch_size("cpu", serving=True) == 128


def test_unset_is_resolved_and_a_given_value_kept(monkeypatch):
    _fake_gpu(monkeypatch, 141)
    for cls in (PytorchEngineConfig, TurbomindEngineConfig):
        config = cls()
        assert config.max_batch_size is None
        resolved, settings = with_max_batch_size(config, EngineSettings.from_config(config))
        assert (resolved.max_batch_size, settings.max_batch_size) == (256, 256)
        resolved, settings = with_max_batch_size(config, EngineSettings.from_config(config),
                                                 serving=True)
        assert (resolved.max_batch_size, settings.max_batch_size) == (1024, 1024)
        given = cls(max_batch_size=64)
        resolved, settings = with_max_batch_size(given, EngineSettings.from_config(given))
        assert (resolved.max_batch_size, settings.max_batch_size) == (64, 64)


def test_a_config_class_without_the_field_still_gets_a_batch(monkeypatch):
    monkeypatch.setattr(settings_module, "default_max_batch_size", lambda device, serving=False: 77)
    config = SimpleNamespace(device="cpu")
    resolved, settings = with_max_batch_size(config, EngineSettings.from_config(config))
    assert resolved is config and settings.max_batch_size == 77


def test_engine_runs_the_resolved_batch(tiny_llama_dir):
    engine = build_llm_engine(tiny_llama_dir, backend_config=PytorchEngineConfig(device="cpu"))
    try:
        assert engine.scheduler.config.max_batch_size == 128
    finally:
        engine.runner.close()


@pytest.mark.parametrize("engine_process", [False, True])
def test_a_server_gets_the_serving_default(monkeypatch, tiny_llama_dir, engine_process):
    """api_server asks for the server's batch, in a thread or in the engine process; pipeline()
    and the bench keep the offline one."""
    import lmforge.serve.server as server_module
    from lmforge.engine import builder

    seen = []

    def fake_build(*args, **kwargs):
        seen.append(kwargs)
        raise RuntimeError("stop after the call")

    monkeypatch.setattr(builder, "build_async_engine", fake_build)
    with pytest.raises(RuntimeError, match="stop after the call"):
        server_module.run_api_server(tiny_llama_dir, engine_process=engine_process,
                                     server_port=0)
    assert seen[0]["serving"] is True and seen[0]["engine_process"] is engine_process


def test_serving_reaches_the_engine(monkeypatch, tiny_llama_dir):
    monkeypatch.setattr(settings_module, "default_max_batch_size",
                        lambda device, serving=False: 96 if serving else 48)
    for serving, batch in ((False, 48), (True, 96)):
        engine = build_llm_engine(tiny_llama_dir, backend_config=PytorchEngineConfig(device="cpu"),
                                  serving=serving)
        try:
            assert engine.scheduler.config.max_batch_size == batch
        finally:
            engine.runner.close()
