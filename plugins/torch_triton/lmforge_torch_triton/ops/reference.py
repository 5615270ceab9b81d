"""Pure-PyTorch ops: the CPU path of the ``pytorch`` engine and the reference for its kernels.

Every function here has the signature a Triton kernel in ``ops/triton_*.py`` must match. Shapes:
``T`` tokens in the step, ``B`` sequences, ``nh`` query heads, ``nkv`` K/V heads (``nh % nkv ==
0``), ``d`` head dim, ``NB`` blocks in the pool, ``BS`` block size. The paged cache of one layer
is ``k_cache, v_cache: [NB, BS, nkv, d]``; position ``p`` of sequence ``b`` lives in block
``block_tables[b][p // BS]`` at row ``p % BS``.

The ops that touch the cache also take a quantized one (``quant_policy`` 8 or 4): uint8 codes
plus ``k_scales_zeros, v_scales_zeros: [NB, BS, nkv, 2]`` float32, laid out as
:mod:`lmforge_torch_triton.kv_cache` describes. Stores quantize; attention reads dequantized
values in float32. At quant_policy 4 the cache may hold keys in a Hadamard basis
(``kv_cache.rotates_keys``): :func:`rope_and_store_kv` then returns the queries in that basis
too, which is what attention over that cache takes.

Family differences are arguments with defaults that keep the Llama path as it was: RMSNorm's
``offset`` (Gemma's ``1 + w``), per-head query and key norms in :func:`rope_and_store_kv`
(Qwen3, Gemma 3), soft-capped attention scores (Gemma 2), and the GeGLU activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lmforge.model.linear import AWQLinear, DenseLinear, W8A8Linear

from .. import kv_cache


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None,
    offset: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RMSNorm of ``x: [T, H]``; with ``residual``, normalizes ``x + residual`` and returns that sum
    as the new residual. With ``offset`` the scale is ``offset + weight``, applied in float32
    before the cast (Gemma's order)."""
    if residual is not None:
        x = x + residual
        residual = x
    return _normalize(x, weight, eps, offset), residual


def _normalize(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float) -> torch.Tensor:
    """RMSNorm over the last dimension of ``x``, in ``x``'s dtype."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if offset:
        return (xf * (offset + weight.float())).to(x.dtype)
    # HF order: cast back to the activation dtype before scaling by the weight.
    return (weight * xf.to(x.dtype)).to(x.dtype)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``silu(x[:, :I]) * x[:, I:]`` for ``x: [T, 2*I]``."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
    """``gelu(x[:, :I]) * x[:, I:]`` with GELU's tanh approximation (GeGLU), for ``x: [T, 2*I]``."""
    gate, up = x.chunk(2, dim=-1)
    return F.gelu(gate, approximate="tanh") * up


def linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x[T, K] @ w[N, K].T (+ bias)``."""
    return F.linear(x, w, bias)


def silu_mul_linear(
    gate_up: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`silu_and_mul` then :func:`linear`: the gated MLP's down projection."""
    return F.linear(silu_and_mul(gate_up), w, bias)


def linear_dense(x: torch.Tensor, w: DenseLinear) -> torch.Tensor:
    """:func:`linear` for a dense weight (the op table dispatches ``linear`` on the weight's
    kind; see :mod:`lmforge.model.linear`)."""
    return F.linear(x, w.weight, w.bias)


def linear_awq(x: torch.Tensor, w: AWQLinear) -> torch.Tensor:
    """``x @ W.T`` for an AWQ int4 weight: dequantized, then a 16-bit matmul."""
    return w.reference(x)


def linear_w8a8(x: torch.Tensor, w: W8A8Linear) -> torch.Tensor:
    """``x @ W.T`` for a W8A8 weight: ``x`` quantized per token, an exact 8-bit matmul, then
    both scales."""
    return w.reference(x)


def silu_mul_linear_dense(gate_up: torch.Tensor, w: DenseLinear) -> torch.Tensor:
    """:func:`silu_mul_linear` for a dense weight."""
    return silu_mul_linear(gate_up, w.weight, w.bias)


def silu_mul_linear_awq(gate_up: torch.Tensor, w: AWQLinear) -> torch.Tensor:
    """:func:`silu_and_mul` then :func:`linear_awq`."""
    return w.reference(silu_and_mul(gate_up))


def silu_mul_linear_w8a8(gate_up: torch.Tensor, w: W8A8Linear) -> torch.Tensor:
    """:func:`silu_and_mul` then :func:`linear_w8a8`."""
    return w.reference(silu_and_mul(gate_up))


def rope_cos_sin(
    positions: torch.Tensor, inv_freq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cos and sin tables ``[T, d/2]`` (float32) for ``positions: [T]``."""
    freqs = positions.to(torch.float32)[:, None] * inv_freq.to(torch.float32)[None, :]
    return freqs.cos(), freqs.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # NeoX / HF "rotate_half" layout: the two halves of the head dim are the pair's components.
    x1, x2 = x.float().chunk(2, dim=-1)
    c, s = cos[:, None, :], sin[:, None, :]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate ``q: [T, nh, d]`` and ``k: [T, nkv, d]`` by the tables from :func:`rope_cos_sin`."""
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


def rope_and_store_kv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scales_zeros: torch.Tensor | None = None,
    v_scales_zeros: torch.Tensor | None = None,
    quant_policy: int = 0,
    q_norm: torch.Tensor | None = None,
    k_norm: torch.Tensor | None = None,
    norm_eps: float = 1e-6,
    norm_offset: float = 0.0,
    k_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Rotate ``q`` and ``k``, store the rotated ``k`` and ``v`` in the cache; returns rotated q
    (in the cache's key basis). With ``q_norm`` and ``k_norm`` (``[d]``), each query and key
    head is first RMS-normalized (as :func:`rms_norm`, in the activation dtype). ``k_out``
    (``[T, nkv, d]``, ``k``'s dtype), when given, receives the rotated keys unquantized, in the
    cache's key basis: what :func:`paged_prefill_attention` takes as ``k_new``."""
    if q_norm is not None:
        q = _normalize(q, q_norm, norm_eps, norm_offset)
        k = _normalize(k, k_norm, norm_eps, norm_offset)
    q, k = apply_rope(q, k, cos, sin)
    store_kv(k, v, k_cache, v_cache, slot_mapping, k_scales_zeros, v_scales_zeros, quant_policy)
    if k_out is not None:
        k_out.copy_(kv_cache.to_key_basis(k, quant_policy))
    if kv_cache.rotates_keys(quant_policy, q.shape[-1]):
        q = kv_cache.to_key_basis(q, quant_policy).to(q.dtype)
    return q


def store_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scales_zeros: torch.Tensor | None = None,
    v_scales_zeros: torch.Tensor | None = None,
    quant_policy: int = 0,
) -> None:
    """Write ``k, v: [T, nkv, d]`` into the paged cache at ``slot_mapping[t] = block * BS + row``
    (quantized, with each token's scales and zeros, when ``quant_policy`` is 8 or 4; keys in the
    cache's key basis). Tokens at slot -1 (a CUDA graph's padding rows) are not written."""
    if quant_policy:
        k = kv_cache.to_key_basis(k, quant_policy)
    if bool((slot_mapping < 0).any()):
        kept = slot_mapping >= 0
        k, v, slot_mapping = k[kept], v[kept], slot_mapping[kept]
    pairs = ((k, k_cache, k_scales_zeros), (v, v_cache, v_scales_zeros))
    for x, cache, scales_zeros in pairs:
        nkv, d = cache.shape[2], cache.shape[3]
        if not quant_policy:
            cache.view(-1, nkv, d).index_copy_(0, slot_mapping, x.to(cache.dtype))
            continue
        codes, params = kv_cache.quantize(x, quant_policy)
        cache.view(-1, nkv, d).index_copy_(0, slot_mapping, codes)
        scales_zeros.view(-1, nkv, 2).index_copy_(0, slot_mapping, params)


def _values(cache: torch.Tensor, scales_zeros: torch.Tensor | None,
            quant_policy: int) -> torch.Tensor:
    """Blocks of the cache as values: the blocks themselves, or their codes dequantized."""
    if not quant_policy:
        return cache
    return kv_cache.dequantize(cache, scales_zeros, quant_policy)


def _gather_kv(cache: torch.Tensor, block_tables: torch.Tensor, num_blocks: int,
               scales_zeros: torch.Tensor | None = None, quant_policy: int = 0) -> torch.Tensor:
    """``[B, num_blocks * BS, nkv, d]``: each sequence's first ``num_blocks`` blocks, contiguous."""
    tables = block_tables[:, :num_blocks].long()
    sz = None if scales_zeros is None else scales_zeros[tables]
    blocks = _values(cache[tables], sz, quant_policy)
    b, bs = tables.shape[0], cache.shape[1]
    return blocks.reshape(b, num_blocks * bs, blocks.shape[-2], blocks.shape[-1])


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """SDPA in float32 over ``q: [B, Lq, nh, d]``, ``k, v: [B, Lk, nkv, d]`` and a boolean
    ``mask: [B, Lq, Lk]`` (True = attend; None = every key). Returns ``[B, Lq, nh, d]``. With
    ``softcap`` the scaled scores become ``softcap * tanh(score / softcap)`` first."""
    qf, kf, vf = (t.float().transpose(1, 2) for t in (q, k, v))
    attn_mask = None if mask is None else mask[:, None]
    if softcap is not None:
        return _attend_softcapped(qf, kf, vf, attn_mask, scale, softcap).transpose(1, 2)
    # enable_gqa lets SDPA share each K/V head across its query heads without copying them.
    out = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=attn_mask, scale=scale,
                                         enable_gqa=True)
    return out.transpose(1, 2)


def _attend_softcapped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       mask: torch.Tensor | None, scale: float, softcap: float) -> torch.Tensor:
    """Attention over ``[B, heads, L, d]`` float32 tensors whose scores are soft-capped (SDPA
    has no such step); each K/V head serves its group of query heads."""
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = softcap * torch.tanh((q @ k.transpose(-1, -2)) * scale / softcap)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, -1) @ v


def _window_mask(
    q_pos: torch.Tensor, kv_len: torch.Tensor, key_len: int, sliding_window: int | None
) -> torch.Tensor:
    """Boolean ``[B, Lq, Lk]``: causal, within ``kv_len``, and within the sliding window."""
    k_pos = torch.arange(key_len, device=q_pos.device)
    mask = (k_pos[None, None, :] <= q_pos[:, :, None]) & (
        k_pos[None, None, :] < kv_len[:, None, None]
    )
    if sliding_window is not None:
        # HF/Mistral semantics: a query at p sees keys at p - window + 1 … p.
        mask &= k_pos[None, None, :] > q_pos[:, :, None] - sliding_window
    return mask


def paged_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    kv_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    k_scales_zeros: torch.Tensor | None = None,
    v_scales_zeros: torch.Tensor | None = None,
    quant_policy: int = 0,
    softcap: float | None = None,
) -> torch.Tensor:
    """One query token per sequence (``q: [B, nh, d]``) over its ``kv_lens[b]`` cached positions,
    its own K/V included. Returns ``[B, nh, d]`` in ``q``'s dtype. ``softcap`` soft-caps the
    scaled scores (see :func:`_attend`)."""
    bs = k_cache.shape[1]
    quant = (k_scales_zeros, v_scales_zeros, quant_policy)
    if q.shape[0] == 1 and sliding_window is None:
        return _decode_one(q, k_cache, v_cache, block_tables[0], int(kv_lens[0]), scale, *quant,
                           softcap)
    num_blocks = (int(kv_lens.max()) + bs - 1) // bs
    k = _gather_kv(k_cache, block_tables, num_blocks, k_scales_zeros, quant_policy)
    v = _gather_kv(v_cache, block_tables, num_blocks, v_scales_zeros, quant_policy)
    kv_lens = kv_lens.long()
    mask = _window_mask((kv_lens - 1)[:, None], kv_lens, k.shape[1], sliding_window)
    return _attend(q[:, None], k, v, mask, scale, softcap)[:, 0].to(q.dtype)


def _decode_one(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                table: torch.Tensor, kv_len: int, scale: float,
                k_scales_zeros: torch.Tensor | None, v_scales_zeros: torch.Tensor | None,
                quant_policy: int, softcap: float | None) -> torch.Tensor:
    """A single sequence needs no mask; when its blocks are consecutive (the usual case for one
    stream) its K/V are a view of the pool rather than a gathered copy."""
    bs = k_cache.shape[1]
    num_blocks = (kv_len + bs - 1) // bs
    ids = table[:num_blocks]
    first = int(ids[0])
    if num_blocks == 1 or bool((ids[1:] - ids[:-1] == 1).all()):
        index = slice(first, first + num_blocks)
    else:
        index = ids.long()

    def rows(cache: torch.Tensor, scales_zeros: torch.Tensor | None) -> torch.Tensor:
        sz = None if scales_zeros is None else scales_zeros[index]
        blocks = _values(cache[index], sz, quant_policy)
        return blocks.reshape(1, num_blocks * bs, blocks.shape[-2], blocks.shape[-1])[:, :kv_len]

    k, v = rows(k_cache, k_scales_zeros), rows(v_cache, v_scales_zeros)
    return _attend(q[:, None], k, v, None, scale, softcap)[:, 0].to(q.dtype)


def _put_new_tokens(k: torch.Tensor, v: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor,
                    cu: list[int], kv_lens: list[int]) -> None:
    """Overwrite each sequence's last ``q_len`` positions of the gathered ``k, v`` with the
    step's own unquantized keys and values."""
    for b, kv_len in enumerate(kv_lens):
        q_len = cu[b + 1] - cu[b]
        k[b, kv_len - q_len:kv_len] = k_new[cu[b]:cu[b + 1]].to(k.dtype)
        v[b, kv_len - q_len:kv_len] = v_new[cu[b]:cu[b + 1]].to(v.dtype)


def paged_prefill_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_q_lens: torch.Tensor,
    kv_lens: torch.Tensor,
    scale: float,
    sliding_window: int | None = None,
    max_q_len: int | None = None,
    out: torch.Tensor | None = None,
    k_scales_zeros: torch.Tensor | None = None,
    v_scales_zeros: torch.Tensor | None = None,
    quant_policy: int = 0,
    softcap: float | None = None,
    k_new: torch.Tensor | None = None,
    v_new: torch.Tensor | None = None,
) -> torch.Tensor:
    """Varlen causal attention: sequence ``b``'s queries are rows ``cu_q_lens[b]:cu_q_lens[b+1]``
    of ``q: [T, nh, d]``, at the last ``q_len`` of its ``kv_lens[b]`` positions, attending to the
    cached positions up to their own (their K/V already stored). Returns ``[T, nh, d]``.
    ``max_q_len`` (the longest query length) only spares kernels a read-back; unused here.
    ``out``, when given, receives the result. ``softcap`` soft-caps the scaled scores.

    With ``k_new`` and ``v_new`` (``[T, nkv, d]``, rows aligned with ``q``: this step's keys in
    the cache's key basis, as ``rope_and_store_kv``'s ``k_out``, and its values), only each
    sequence's prefix (positions before ``kv_lens[b] - q_len``) is read from the cache; its own
    tokens are attended as these hold them, unquantized whatever ``quant_policy`` is."""
    bs = k_cache.shape[1]
    cu = cu_q_lens.long().tolist()
    q_lens = [cu[i + 1] - cu[i] for i in range(len(cu) - 1)]
    max_q = max(q_lens)
    num_blocks = (int(kv_lens.max()) + bs - 1) // bs
    k = _gather_kv(k_cache, block_tables, num_blocks, k_scales_zeros, quant_policy)
    v = _gather_kv(v_cache, block_tables, num_blocks, v_scales_zeros, quant_policy)
    kv_lens = kv_lens.long()
    if k_new is not None:
        _put_new_tokens(k, v, k_new, v_new, cu, kv_lens.tolist())

    # Pad the ragged queries to [B, max_q] so the whole batch is one SDPA call.
    nb = len(q_lens)
    q_lens_t = torch.tensor(q_lens, device=q.device)
    row = torch.arange(max_q, device=q.device)
    valid = row[None, :] < q_lens_t[:, None]
    token_index = (torch.tensor(cu[:-1], device=q.device)[:, None] + row[None, :])[valid]
    q_pad = q.new_zeros(nb, max_q, q.shape[1], q.shape[2])
    q_pad[valid] = q[token_index]
    q_pos = kv_lens[:, None] - q_lens_t[:, None] + row[None, :]
    mask = _window_mask(q_pos, kv_lens, k.shape[1], sliding_window)
    # Padding rows attend to key 0 only so SDPA never sees an all-masked row; they are dropped.
    mask[~valid] = False
    mask[..., 0] |= ~valid
    result = _attend(q_pad, k, v, mask, scale, softcap)[valid].to(q.dtype)
    if out is None:
        return result
    return out.copy_(result)
