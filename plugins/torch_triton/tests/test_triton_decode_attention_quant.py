"""Decode attention whose output is quantized per token for a W8A8 output projection: the codes
and scales are exactly those :func:`quantize_per_token` gives on the attention output (so the
tokens are those of the unfused path), with or without splits, and close to the PyTorch
reference's; the merge kernel's per-sequence counters are left zero for the next call."""

import os
import random

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from conftest_triton import (  # noqa: E402
    DEVICE,
    fp8_quantizing_needs_gpu,
    make_generator,
    make_paged_kv,
    needs_gpu,
    needs_kernels,
    randn,
)
from lmforge_torch_triton.ops import quant_reference  # noqa: E402
from lmforge_torch_triton.ops.triton_decode_attention import (  # noqa: E402
    paged_decode_attention_quant,
    paged_decode_attention_splitk,
)
from lmforge_torch_triton.ops.triton_quant_act import quantize_per_token  # noqa: E402
from lmforge_torch_triton.ops.triton_quant_common import split_k_workspace  # noqa: E402

FP8 = torch.float8_e4m3fn


def assert_dequantized_close(codes, scales, ref_codes, ref_scales):
    """Within one quantization step of the reference's values, plus the attention output's own
    16-bit rounding, which can move the row's absmax and so every value's scale."""
    assert torch.isfinite(scales).all()
    torch.testing.assert_close(scales, ref_scales, atol=0, rtol=2**-6)
    values = codes.float() * scales[:, None]
    ref_values = ref_codes.float() * ref_scales[:, None]
    if codes.dtype == torch.int8:
        step = torch.maximum(scales, ref_scales)[:, None]
    else:
        step = ref_values.abs() / 8 + ref_scales[:, None] * 2**-9
    assert ((values - ref_values).abs() <= step * 1.001 + ref_values.abs() * 2**-6).all()


def check_decode_quant(kv_lens, num_heads, num_kv_heads, head_dim, block_size, dtype, qdtype,
                       num_splits, window=None, policy=0):
    gen = make_generator(len(kv_lens) * 100 + num_heads + (num_splits or 0))
    kv = make_paged_kv(kv_lens, num_kv_heads, head_dim, block_size, dtype, gen,
                       quant_policy=policy)
    q = randn((len(kv_lens), num_heads, head_dim), dtype, gen)
    args = (q, kv.k_cache, kv.v_cache, kv.block_tables, kv.kv_lens, head_dim**-0.5, window)
    codes, scales = paged_decode_attention_quant(*args, **kv.quant, dtype=qdtype,
                                                 num_splits=num_splits)
    assert codes.shape == (len(kv_lens), num_heads * head_dim) and codes.dtype == qdtype
    if num_splits is not None:
        out = paged_decode_attention_splitk(*args, num_splits, **kv.quant)
        want_codes, want_scales = quantize_per_token(out.reshape(len(kv_lens), -1), qdtype)
        assert torch.equal(scales, want_scales)
        assert torch.equal(codes.float(), want_codes.float())
    assert_dequantized_close(codes, scales, *quant_reference.paged_decode_attention_quant(
        *args, **kv.quant, dtype=qdtype))
    # The counters are zero again: a second call (as the next layer's) quantizes as well.
    _, counters = split_k_workspace(torch.device(DEVICE), 0, len(kv_lens))
    assert not counters.any()
    again, again_scales = paged_decode_attention_quant(*args, **kv.quant, dtype=qdtype,
                                                       num_splits=num_splits)
    assert torch.equal(again.float(), codes.float()) and torch.equal(again_scales, scales)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("num_kv_heads,num_splits,window,policy", [
    (2, 3, None, 0),  # the merge kernel quantizes
    (8, 1, None, 0),  # no merge: a quantization kernel of its own
    (1, 4, 40, 0),
    (2, 2, None, 8),
])
def test_decode_attention_quant_int8(dtype, num_kv_heads, num_splits, window, policy):
    check_decode_quant([1, 37, 150], 8, num_kv_heads, 32, 16, dtype, torch.int8, num_splits,
                       window, policy)


@pytest.mark.triton_interpret
@needs_kernels
def test_decode_attention_quant_head_dim_not_power_of_two():
    check_decode_quant([9, 70], 4, 2, 80, 16, torch.float32, torch.int8, 2)


@pytest.mark.triton_interpret
@needs_kernels
@fp8_quantizing_needs_gpu
def test_decode_attention_quant_fp8():
    check_decode_quant([1, 37, 150], 8, 2, 32, 16, torch.bfloat16, FP8, 3)


@pytest.mark.triton_interpret
@needs_kernels
def test_decode_attention_quant_rejects_other_types():
    with pytest.raises(ValueError, match="torch.int8 or torch.float8_e4m3fn"):
        check_decode_quant([5], 4, 2, 32, 16, torch.float32, torch.float16, 2)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("qdtype", [torch.int8, FP8], ids=["int8", "fp8"])
@pytest.mark.parametrize("batch,max_len,num_splits", [
    (1, 640, None),  # batch 1 decode: the launch the engine picks (splits, merge quantizes)
    (1, 4096, 16),
    (32, 2048, None),
    (64, 2048, 1),
])
def test_decode_attention_quant_llama3_shapes(qdtype, batch, max_len, num_splits):
    rng = random.Random(batch * max_len)
    kv_lens = [max_len] + [rng.randint(1, max_len) for _ in range(batch - 1)]
    check_decode_quant(kv_lens, 32, 8, 128, 64, torch.bfloat16, qdtype, num_splits)
