"""What a user meets when the engine cannot run: one sentence each, no GPU needed."""

from __future__ import annotations

import pytest
from lmforge.errors import ConfigError
from lmforge_turbomind_cuda import build, library, runner


def test_build_without_nvcc_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "find_nvcc", lambda: None)
    with pytest.raises(build.BuildError, match="^nvcc was not found: install the CUDA toolkit"):
        build.build_library(tmp_path, force=True)


def test_a_missing_library_says_how_to_build_it(monkeypatch, tmp_path):
    monkeypatch.setenv("LMFORGE_TURBOMIND_LIB", str(tmp_path / "absent.so"))
    library.load_library.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"^The turbomind engine's CUDA library is not built: "
                                              r"install nvcc .* or use --backend pytorch\.$"):
            library.load_library()
    finally:
        library.load_library.cache_clear()


class FakeLibrary:
    """A library without code for the GPU."""

    class dll:
        @staticmethod
        def tm_probe_device(device):
            return 1

    def build_info(self):
        return {"cuda": "13.0", "archs": ["80", "90a"]}


def test_a_library_built_for_other_gpus_says_how_to_rebuild(monkeypatch):
    import torch

    monkeypatch.setattr(runner, "load_library", FakeLibrary)
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (12, 0))
    with pytest.raises(ConfigError) as err:
        runner.open_library(torch.device("cuda", 0))
    assert str(err.value) == (
        "The turbomind library was built for sm_80, sm_90a, not this GPU (sm_120); rebuild it "
        "with `LMFORGE_TURBOMIND_ARCHS=120 python -m lmforge_turbomind_cuda.build --force`.")


def test_no_gpu_is_refused_before_anything_loads(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="^The turbomind engine needs a CUDA GPU and none is "
                                          "visible; use --backend pytorch to run on the CPU.$"):
        runner.cuda_device("auto")


def test_backend_turbomind_without_a_gpu_is_one_sentence(monkeypatch):
    import torch
    from lmforge.cli.app import create_app
    from typer.testing import CliRunner

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(create_app(), ["chat", "--backend", "turbomind"])
    assert result.exit_code == 1
    assert "The turbomind engine does not support a CPU (no CUDA GPU is visible); the pytorch " \
           "engine does (--backend pytorch)." in " ".join(result.output.split())
    assert "Traceback" not in result.output
