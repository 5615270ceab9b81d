"""The compiled library, loaded with ctypes: its C structs, argument types and error handling.

Nothing here imports torch or touches a GPU until a function is called; the argument checks
(``tm_check_model``, ``tm_check_step`` and each kernel's own) run on any machine.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
from ctypes import POINTER, c_char_p, c_float, c_int, c_int32, c_int64, c_size_t, c_void_p
from pathlib import Path

from lmforge.errors import ConfigError, EngineError

from .build import LIB_DIR, LIB_NAME, read_stamp

TM_FLOAT16, TM_BFLOAT16 = 0, 1


class TmLayer(ctypes.Structure):
    _fields_ = [(name, c_void_p) for name in (
        "input_norm", "qkv", "qkv_bias", "o", "post_norm", "gate_up", "down", "k_cache",
        "v_cache")]


class TmModelDesc(ctypes.Structure):
    _fields_ = [
        ("device", c_int32), ("dtype", c_int32), ("num_layers", c_int32), ("hidden", c_int32), ("num_heads", c_int32),
        ("num_kv_heads", c_int32), ("head_dim", c_int32), ("inter", c_int32), ("vocab", c_int32),
        ("norm_eps", c_float), ("sliding_window", c_int32), ("block_size", c_int32),
        ("max_tokens", c_int32), ("max_seqs", c_int32), ("max_splits", c_int32),
        ("layers", POINTER(TmLayer)),
        *[(name, c_void_p) for name in (
            "embed", "final_norm", "lm_head", "inv_freq", "x", "residual", "normed", "qkv_out",
            "attn_out", "gate_up_out", "act", "split_out", "split_lse", "gemm_workspace")],
        ("gemm_workspace_bytes", c_size_t),
    ]


class TmStep(ctypes.Structure):
    _fields_ = [
        *[(name, c_int32) for name in (
            "num_tokens", "num_seqs", "num_decode", "num_splits", "num_prefill_tiles",
            "num_logits", "block_table_stride")],
        *[(name, c_void_p) for name in (
            "input_ids", "positions", "slots", "block_tables", "kv_lens", "q_starts", "tile_seq",
            "tile_start", "logit_rows", "logits_lowp", "logits")],
    ]


_I, _P, _F = c_int, c_void_p, c_float
SIGNATURES = {
    "tm_build_info": [POINTER(c_int), c_char_p, _I],
    "tm_probe_device": [c_int],
    "tm_load_cublaslt": [c_char_p],
    "tm_check_model": [POINTER(TmModelDesc)],
    "tm_check_step": [POINTER(TmModelDesc), POINTER(TmStep)],
    "tm_model_create": [POINTER(TmModelDesc), POINTER(c_void_p)],
    "tm_model_destroy": [_P],
    "tm_forward": [_P, POINTER(TmStep), _P],
    "tm_embedding": [_I, _P, _P, _P, _I, _I, _I, _P],
    "tm_rms_norm": [_I, _P, _P, _P, _P, _P, _I, _I, _F, _P],
    "tm_silu_mul": [_I, _P, _P, _I, _I, _P],
    "tm_rope_kv": [_I, _P, _P, _P, _P, _P, _P, _P, _I, _I, _I, _I, _P],
    "tm_decode_attention": [_I, _P, _P, _I, _P, _P, _P, _I, _P, _I, _I, _I, _I, _I, _F, _I, _I,
                            _P, _P, _P],
    "tm_prefill_attention": [_I, _P, _P, _I, _P, _P, _P, _I, _P, _P, _P, _P, _I, _I, _I, _I, _I,
                             _F, _I, _P],
    "tm_linear": [_I, _P, _P, _P, _I, _I, _I, _I, _P, c_size_t, _P],
    "tm_to_float": [_I, _P, _P, c_int64, _P],
}


class TurbomindError(EngineError):
    """A call into the library failed; the message is the library's own sentence."""


class Library:
    """The loaded ``libturbomind.so``. Calling ``lib.NAME(...)`` runs ``tm_NAME`` and raises
    :class:`TurbomindError` with the library's message when it returns non-zero."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dll = ctypes.CDLL(str(path))
        for name, argtypes in SIGNATURES.items():
            fn = getattr(self.dll, name)
            fn.argtypes = argtypes
            fn.restype = c_int
        self.dll.tm_last_error.restype = c_char_p
        self.dll.tm_last_error.argtypes = []

    def __getattr__(self, name: str):
        fn = getattr(self.dll, f"tm_{name}")

        def call(*args):
            if fn(*args) != 0:
                raise TurbomindError(self.last_error())

        return call

    def last_error(self) -> str:
        return self.dll.tm_last_error().decode(errors="replace")

    def build_info(self) -> dict:
        version, archs = c_int(), ctypes.create_string_buffer(64)
        self.dll.tm_build_info(ctypes.byref(version), archs, 64)
        v = version.value
        return {"cuda": f"{v // 1000}.{v % 1000 // 10}",
                "archs": archs.value.decode().split(",")}


def library_path() -> Path:
    """``LMFORGE_TURBOMIND_LIB``, else the library built into this package."""
    return Path(os.environ.get("LMFORGE_TURBOMIND_LIB") or LIB_DIR / LIB_NAME)


@functools.cache
def load_library() -> Library:
    """The library, or a one-sentence :class:`ConfigError` that says how to get it."""
    path = library_path()
    if not path.is_file():
        raise ConfigError(
            "The turbomind engine's CUDA library is not built: install nvcc (CUDA 12 or newer) "
            "and run `python -m lmforge_turbomind_cuda.build`, or use --backend pytorch."
        )
    try:
        return Library(path)
    except OSError as exc:
        raise ConfigError(f"The turbomind library {path} cannot be loaded: {exc}.") from None


def find_cublaslt() -> str:
    """The cuBLASLt that this process's torch already loaded, else the nvidia-cublas wheel's,
    else the system's."""
    try:
        maps = Path("/proc/self/maps").read_text()
        found = re.search(r"(/\S*libcublasLt\.so[.\d]*)", maps)
        if found:
            return found.group(1)
    except OSError:
        pass
    try:
        import nvidia.cublas  # the wheel torch's CUDA builds depend on

        for folder in nvidia.cublas.__path__:
            libs = sorted(Path(folder, "lib").glob("libcublasLt.so*"))
            if libs:
                return str(libs[-1])
    except ImportError:
        pass
    import ctypes.util

    name = ctypes.util.find_library("cublasLt")
    if name is None:
        raise ConfigError(
            "cuBLASLt was not found: install a CUDA build of torch (it brings nvidia-cublas)."
        )
    return name


def describe_build() -> dict:
    """What ``lmforge check_env`` reports: where the library is, its build and whether it loads
    and has code for this machine's GPU."""
    path = library_path()
    report: dict = {"path": str(path)}
    if not path.is_file():
        report["status"] = "not built (python -m lmforge_turbomind_cuda.build)"
        return report
    stamp = read_stamp(path.parent)
    try:
        lib = Library(path)
    except OSError as exc:
        report["status"] = f"does not load: {exc}"
        return report
    info = lib.build_info()
    report.update(cuda=info["cuda"], archs=",".join(f"sm_{a}" for a in info["archs"]),
                  nvcc=stamp.get("nvcc", "unknown"))
    report["status"] = "loads"
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.init()
            ok = lib.dll.tm_probe_device(torch.cuda.current_device()) == 0
            report["status"] = "loads; runs on this GPU" if ok else (
                f"loads; no code for this GPU ({lib.last_error()})")
    except ImportError:
        pass
    return report
