"""Read a GGUF file (llama.cpp's format) once: its metadata and tensor table, data memory-mapped.

``gguf.GGUFReader`` builds a numpy view per metadata item, which takes seconds for a tokenizer
of 50k tokens and merges; reading the header with ``struct`` takes a tenth of a second, and
the file's metadata is then shared by the config, the weights and the chat template.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # version 1 counted in 32 bits; llama.cpp has not written it since 2023
DEFAULT_ALIGNMENT = 32

_STRING, _ARRAY = 8, 9
# Fixed-size value types: struct format by GGUF type id.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
          6: np.float32, 7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of the table: ``shape`` is row-major (torch order), ``offset`` is absolute."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    nbytes: int


class GGUFFile:
    """A GGUF file's metadata (plain Python values) and tensor table; the tensor data is mapped
    while it is read and unmapped by :meth:`release`, so that its pages leave the process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._map: mmap.mmap | None = None
        try:
            with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0,
                                                       access=mmap.ACCESS_READ) as header:
                self.metadata, self.tensors = _parse(header)
        except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
            raise ModelLoadError(f"Cannot read the GGUF file {self.path}: {exc}.") from None

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def tensor_bytes(self, tensor: GGUFTensor) -> np.ndarray:
        """The tensor's stored bytes, a read-only view of the mapped file."""
        if self._map is None:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return np.frombuffer(self._map, dtype=np.uint8, count=tensor.nbytes, offset=tensor.offset)

    def release(self) -> None:
        """Unmap the tensor data (reading a tensor maps it again)."""
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view of the data is still alive: unmapped when it goes
                return
            self._map = None

    def dequantize(self, tensor: GGUFTensor) -> np.ndarray:
        """The tensor as a writable float32 array of its shape."""
        from gguf import GGMLQuantizationType, dequantize
        from gguf.constants import GGML_QUANT_SIZES

        qtype = GGMLQuantizationType(tensor.ggml_type)
        block, type_size = GGML_QUANT_SIZES[qtype]
        rows = self.tensor_bytes(tensor).reshape(-1, tensor.shape[-1] // block * type_size)
        array = dequantize(rows, qtype)
        # F32 comes back as a view of the read-only map: copy it; the others are new arrays.
        array = array.astype(np.float32, copy=not array.flags.writeable)
        return array.reshape(tensor.shape)


def _parse(buf: mmap.mmap) -> tuple[dict[str, Any], list[GGUFTensor]]:
    if buf[:4] != MAGIC:
        raise ValueError("it does not start with the GGUF magic number")
    version, tensor_count, kv_count = struct.unpack_from("<IQQ", buf, 4)
    if version not in VERSIONS:
        raise ValueError(f"GGUF version {version} is not supported (only {VERSIONS})")
    reader = _Reader(buf, 24)
    metadata = {}
    for _ in range(kv_count):
        key = reader.string()
        metadata[key] = reader.value(reader.scalar("<I"))
    infos = []
    for _ in range(tensor_count):
        name = reader.string()
        dims = [reader.scalar("<Q") for _ in range(reader.scalar("<I"))]
        ggml_type, offset = reader.scalar("<I"), reader.scalar("<Q")
        infos.append((name, tuple(reversed(dims)), ggml_type, offset))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    data_start = -(-reader.offset // alignment) * alignment
    return metadata, [
        GGUFTensor(name, shape, ggml_type, data_start + offset, _nbytes(shape, ggml_type))
        for name, shape, ggml_type, offset in infos
    ]


def _nbytes(shape: tuple[int, ...], ggml_type: int) -> int:
    from gguf import GGMLQuantizationType
    from gguf.constants import GGML_QUANT_SIZES

    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    return int(np.prod(shape, dtype=np.int64)) // block * type_size


class _Reader:
    """Sequential little-endian reads from the header."""

    def __init__(self, buf: mmap.mmap, offset: int) -> None:
        self.buf, self.offset = buf, offset

    def scalar(self, fmt: str) -> Any:
        (value,) = struct.unpack_from(fmt, self.buf, self.offset)
        self.offset += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        size = self.scalar("<Q")
        start, self.offset = self.offset, self.offset + size
        return self.buf[start:self.offset].decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind == _STRING:
            return self.string()
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind != _ARRAY:
            raise ValueError(f"unknown metadata value type {kind}")
        item_kind, count = self.scalar("<I"), self.scalar("<Q")
        if item_kind in _NUMPY:  # numbers in bulk: token scores and types are 50k long
            array = np.frombuffer(self.buf, dtype=_NUMPY[item_kind], count=count,
                                  offset=self.offset)
            self.offset += array.nbytes
            return array.tolist()
        return [self.value(item_kind) for _ in range(count)]
