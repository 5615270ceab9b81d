"""The library's C ABI on a machine without a GPU: it loads, reports its build, and refuses bad
arguments with one sentence before anything reaches the device."""

from __future__ import annotations

import ctypes

import pytest
from lmforge_turbomind_cuda.build import DEFAULT_ARCHS, find_nvcc, read_stamp, sources_digest
from lmforge_turbomind_cuda.library import (
    TM_BFLOAT16,
    Library,
    TmLayer,
    TmModelDesc,
    TmStep,
    TurbomindError,
    library_path,
)

# Where nvcc exists the install has built the library, so its absence is a failure, not a skip.
pytestmark = pytest.mark.skipif(not library_path().is_file() and find_nvcc() is None,
                                reason="no nvcc here, so libturbomind.so is not built")

FAKE = 0x10000  # an aligned address: checks never dereference device pointers


@pytest.fixture(scope="module")
def lib() -> Library:
    assert library_path().is_file(), (
        "nvcc is here but libturbomind.so is not built: run python -m lmforge_turbomind_cuda.build")
    return Library(library_path())


def test_library_is_built_from_these_sources(lib):
    stamp = read_stamp(library_path().parent)
    assert stamp["sources"] == sources_digest(), "rebuild: python -m lmforge_turbomind_cuda.build"
    info = lib.build_info()
    assert info["archs"] == stamp["archs"]
    assert set(info["archs"]) <= set(DEFAULT_ARCHS)
    assert info["cuda"].split(".")[0] in ("12", "13")


def model_desc(layers, **overrides) -> TmModelDesc:
    values = dict(
        device=0, dtype=TM_BFLOAT16, num_layers=len(layers), hidden=4096, num_heads=32, num_kv_heads=8,
        head_dim=128, inter=14336, vocab=128256, norm_eps=1e-5, sliding_window=0, block_size=64,
        max_tokens=8192, max_seqs=128, max_splits=16, gemm_workspace_bytes=32 << 20,
    )
    values.update(overrides)
    pointers = {name: FAKE for name, _ in TmModelDesc._fields_
                if name not in values and name != "layers"}
    return TmModelDesc(layers=layers, **pointers, **values)


def layers(n: int = 2, **overrides):
    fields = {name: FAKE for name, _ in TmLayer._fields_}
    fields["qkv_bias"] = None
    fields.update(overrides)
    return (TmLayer * n)(*[TmLayer(**fields) for _ in range(n)])


def step(**overrides) -> TmStep:
    values = dict(num_tokens=3, num_seqs=2, num_decode=1, num_splits=4, num_prefill_tiles=1,
                  num_logits=2, block_table_stride=4)
    values.update(overrides)
    pointers = {name: FAKE for name, _ in TmStep._fields_ if name not in values}
    return TmStep(**pointers, **values)


def test_a_llama_3_8b_description_passes(lib):
    ls = layers()
    lib.check_model(ctypes.byref(model_desc(ls)))
    lib.check_step(ctypes.byref(model_desc(ls)), ctypes.byref(step()))


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(head_dim=96), "head_dim 96 is not supported; the kernels take 64 or 128."),
    (dict(num_heads=30), "30 query heads cannot be grouped over 8 key/value heads."),
    (dict(hidden=4100), "hidden is 4100; it must be a positive multiple of 8 (16-byte rows)."),
    (dict(dtype=7), "dtype code 7 is not float16 (0) or bfloat16 (1)."),
    (dict(device=-1), "device is -1; it must be a CUDA device index."),
    (dict(embed=FAKE + 2), "embed is not 16-byte aligned."),
    (dict(x=None), "x is a null pointer."),
    (dict(gemm_workspace_bytes=1024), "gemm_workspace must hold at least 1 MiB."),
])
def test_bad_model_descriptions_are_named(lib, overrides, message):
    with pytest.raises(TurbomindError) as err:
        lib.check_model(ctypes.byref(model_desc(layers(), **overrides)))
    assert str(err.value) == message


def test_a_missing_layer_weight_is_named(lib):
    with pytest.raises(TurbomindError, match="^Layer 0's gate_up is missing.$"):
        lib.check_model(ctypes.byref(model_desc(layers(gate_up=None))))


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(num_tokens=9000), "The step has 9000 tokens; the buffers hold 1 to 8192."),
    (dict(num_splits=17), "num_splits 17 is outside 1..16."),
    (dict(num_prefill_tiles=0), "The step has prompt chunks but no prefill tiles."),
    (dict(logits=None), "logit_rows, logits and logits_lowp must be given when logits are "
                        "asked for."),
    (dict(num_decode=3), "num_decode 3 is outside 0..2."),
])
def test_bad_steps_are_named(lib, overrides, message):
    with pytest.raises(TurbomindError) as err:
        lib.check_step(ctypes.byref(model_desc(layers())), ctypes.byref(step(**overrides)))
    assert str(err.value) == message


def test_kernel_entry_points_check_before_launching(lib):
    with pytest.raises(TurbomindError, match="^head_dim 80 is not supported"):
        lib.decode_attention(1, FAKE, FAKE, 384, FAKE, FAKE, FAKE, 4, FAKE, 2, 4, 2, 80, 16,
                             0.1, 0, 1, None, None, None)
    with pytest.raises(TurbomindError, match="^Several splits need split_out"):
        lib.decode_attention(1, FAKE, FAKE, 384, FAKE, FAKE, FAKE, 4, FAKE, 2, 4, 2, 64, 16,
                             0.1, 0, 4, None, None, None)
    with pytest.raises(TurbomindError, match="^k is 12; it must be a positive multiple of 8"):
        lib.linear(0, FAKE, FAKE, FAKE, 4, 64, 12, 0, None, 0, None)
    with pytest.raises(TurbomindError, match="^rope_kv needs qkv"):
        lib.rope_kv(0, None, None, FAKE, FAKE, FAKE, FAKE, FAKE, 4, 4, 2, 64, None)


def test_forward_refuses_a_null_handle(lib):
    with pytest.raises(TurbomindError, match="^The model handle is a null pointer.$"):
        lib.forward(None, ctypes.byref(step()), None)


def test_check_env_reports_the_build(lib):
    from lmforge.cli.envinfo import collect_env

    section = collect_env()["turbomind library"]
    assert section["path"] == str(library_path())
    assert section["archs"] == ",".join(f"sm_{a}" for a in lib.build_info()["archs"])
    assert section["status"].startswith("loads")
