"""The library's single kernels over torch tensors, with the signatures of :mod:`.reference`:
for the kernel tests and benchmarks (the engine itself makes one call per step)."""

from __future__ import annotations

import ctypes
import functools

import torch

from .library import TM_BFLOAT16, TM_FLOAT16, Library, find_cublaslt, load_library
from .steps import MAX_SPLITS, tile_span


@functools.cache
def _lib() -> Library:
    lib = load_library()
    lib.load_cublaslt(find_cublaslt().encode())
    return lib


def _dtype(t: torch.Tensor) -> int:
    return {torch.float16: TM_FLOAT16, torch.bfloat16: TM_BFLOAT16}[t.dtype]


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def _stream(t: torch.Tensor):
    return ctypes.c_void_p(torch.cuda.current_stream(t.device).cuda_stream)


def embedding(embed: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    out = torch.empty(ids.shape[0], embed.shape[1], dtype=embed.dtype, device=embed.device)
    _lib().embedding(_dtype(embed), _ptr(out), _ptr(embed), _ptr(ids.long()), ids.shape[0],
                     embed.shape[1], embed.shape[0], _stream(embed))
    return out


def rms_norm(x, w, eps, residual=None, index=None) -> torch.Tensor:
    rows = x.shape[0] if index is None else index.shape[0]
    out = torch.empty(rows, x.shape[1], dtype=x.dtype, device=x.device)
    idx = None if index is None else index.int().contiguous()
    _lib().rms_norm(_dtype(x), _ptr(out), _ptr(residual), _ptr(x), _ptr(w), _ptr(idx), rows,
                    x.shape[1], ctypes.c_float(eps), _stream(x))
    return out


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    t, width = gate_up.shape
    out = torch.empty(t, width // 2, dtype=gate_up.dtype, device=gate_up.device)
    _lib().silu_mul(_dtype(gate_up), _ptr(out), _ptr(gate_up), t, width // 2, _stream(gate_up))
    return out


def linear(x: torch.Tensor, w: torch.Tensor, path: int = 0,
           workspace: torch.Tensor | None = None) -> torch.Tensor:
    """``path``: 0 picks, 1 forces the GEMV kernel (at most 8 rows), 2 cuBLASLt."""
    m, k = x.shape
    y = torch.empty(m, w.shape[0], dtype=x.dtype, device=x.device)
    if workspace is None:
        workspace = torch.empty(32 << 20, dtype=torch.uint8, device=x.device)
    _lib().linear(_dtype(x), _ptr(y), _ptr(x), _ptr(w), m, w.shape[0], k, path,
                  _ptr(workspace), workspace.numel(), _stream(x))
    return y


def rope_kv(qkv, bias, inv_freq, positions, slots, k_cache, v_cache, heads, kv_heads) -> None:
    _lib().rope_kv(_dtype(qkv), _ptr(qkv), _ptr(bias), _ptr(inv_freq.float()),
                   _ptr(positions.int()), _ptr(slots.int()), _ptr(k_cache), _ptr(v_cache),
                   qkv.shape[0], heads, kv_heads, k_cache.shape[-1], _stream(qkv))


def decode_attention(q, k_cache, v_cache, block_tables, kv_lens, scale, window=0,
                     num_splits=1) -> torch.Tensor:
    """``q``: ``[seqs, heads, head_dim]`` (one token per sequence, may be a strided view of the
    qkv rows)."""
    seqs, heads, d = q.shape
    out = torch.empty(seqs, heads, d, dtype=q.dtype, device=q.device)
    split_out = torch.empty(seqs, heads, MAX_SPLITS, d, dtype=torch.float32, device=q.device)
    split_lse = torch.empty(seqs, heads, MAX_SPLITS, dtype=torch.float32, device=q.device)
    tables = block_tables.int().contiguous()
    _lib().decode_attention(_dtype(q), _ptr(out), _ptr(q), q.stride(0), _ptr(k_cache),
                            _ptr(v_cache), _ptr(tables), tables.shape[1],
                            _ptr(kv_lens.int().contiguous()), seqs, heads, k_cache.shape[2], d,
                            k_cache.shape[1], ctypes.c_float(scale), window, num_splits,
                            _ptr(split_out), _ptr(split_lse), _stream(q))
    return out


def prefill_attention(q, k_cache, v_cache, block_tables, kv_lens, q_starts, scale,
                      window=0) -> torch.Tensor:
    """``q``: ``[tokens, heads, head_dim]`` of every sequence, ``q_starts`` its ``[seqs + 1]``
    row offsets."""
    tokens, heads, d = q.shape
    out = torch.empty(tokens, heads, d, dtype=q.dtype, device=q.device)
    starts = [int(s) for s in q_starts]
    span = tile_span(heads, k_cache.shape[2])
    tile_seq, tile_start = [], []
    for seq in range(len(starts) - 1):
        for start in range(0, starts[seq + 1] - starts[seq], span):
            tile_seq.append(seq)
            tile_start.append(start)
    device = q.device
    tiles = torch.tensor([tile_seq, tile_start], dtype=torch.int32, device=device)
    tables = block_tables.int().contiguous()
    starts_t = torch.tensor(starts, dtype=torch.int32, device=device)
    _lib().prefill_attention(_dtype(q), _ptr(out), _ptr(q), q.stride(0), _ptr(k_cache),
                             _ptr(v_cache), _ptr(tables), tables.shape[1],
                             _ptr(kv_lens.int().contiguous()), _ptr(starts_t), _ptr(tiles[0]),
                             _ptr(tiles[1]), len(tile_seq), heads, k_cache.shape[2], d,
                             k_cache.shape[1], ctypes.c_float(scale), window, _stream(q))
    return out
