"""Tensor-parallel shards of each linear weight kind: column parts concatenate, row parts sum."""

from __future__ import annotations

import pytest
import torch
from lmforge.errors import ModelLoadError
from lmforge.model.linear import (
    IN,
    OUT,
    AWQLinear,
    DenseLinear,
    W8A8Linear,
    pack_awq,
    split_bounds,
    tensor_slice,
)

N, K, GROUP = 32, 128, 32


def _dense(bias: bool = True) -> DenseLinear:
    torch.manual_seed(0)
    return DenseLinear(torch.randn(N, K), torch.randn(N) if bias else None)


def _awq() -> AWQLinear:
    torch.manual_seed(1)
    q = torch.randint(0, 16, (K, N))
    z = torch.randint(0, 16, (K // GROUP, N))
    return AWQLinear(pack_awq(q), pack_awq(z), torch.rand(K // GROUP, N) / 8, GROUP,
                     torch.randn(N))


def _w8a8(dtype=torch.int8) -> W8A8Linear:
    torch.manual_seed(2)
    codes = torch.randint(-127, 128, (N, K)).to(torch.float32).to(dtype)
    return W8A8Linear(codes, torch.rand(N) / 100, torch.randn(N))


KINDS = {"dense": _dense, "awq": _awq, "w8a8": _w8a8,
         "fp8": lambda: _w8a8(torch.float8_e4m3fn)}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("count", [2, 4])
def test_column_parts_concatenate_to_the_whole(kind, count):
    w = KINDS[kind]()
    x = torch.randn(5, K)
    parts = [w.shard(OUT, i, count) for i in range(count)]
    assert all(p.out_features == N // count and p.in_features == K for p in parts)
    assert all(type(p) is type(w) for p in parts)
    torch.testing.assert_close(torch.cat([p.dequantize() for p in parts]), w.dequantize())
    torch.testing.assert_close(torch.cat([p.reference(x) for p in parts], dim=1), w.reference(x))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("count", [2, 4])
def test_row_parts_sum_to_the_whole(kind, count):
    w = KINDS[kind]()
    parts = [w.shard(IN, i, count) for i in range(count)]
    assert all(p.in_features == K // count and p.out_features == N for p in parts)
    # Only the first part adds the bias: the parts' outputs are summed.
    assert parts[0].bias is not None and all(p.bias is None for p in parts[1:])
    torch.testing.assert_close(torch.cat([p.dequantize() for p in parts], dim=1), w.dequantize())
    x = torch.randn(5, K)
    total = sum(p.reference(x[:, i * K // count:(i + 1) * K // count])
                for i, p in enumerate(parts))
    if kind in ("w8a8", "fp8"):
        # Each part quantizes its own slice of a token: as close to exact as the whole is.
        exact = torch.nn.functional.linear(x, w.dequantize(), w.bias)
        bound = 2 * (w.reference(x) - exact).abs().max() + 1e-3 * exact.abs().max()
        assert (total - exact).abs().max() <= bound
    else:
        torch.testing.assert_close(total, w.reference(x), rtol=1e-5, atol=1e-5)


def test_awq_splits_whole_packs_and_groups():
    w = _awq()
    assert (w.split_unit(OUT), w.split_unit(IN)) == (8, GROUP)
    with pytest.raises(ModelLoadError, match="multiple of 8"):
        w.shard(OUT, 0, 8)  # 4 outputs per part: half an int32
    with pytest.raises(ModelLoadError, match=f"multiple of {GROUP}"):
        w.shard(IN, 0, 8)  # 16 inputs per part: half a group


def test_dense_without_bias_and_uneven_splits():
    w = _dense(bias=False)
    assert w.shard(IN, 1, 2).bias is None
    with pytest.raises(ModelLoadError, match="3 equal parts"):
        w.shard(OUT, 0, 3)


def test_tensor_slice_names_each_tensors_own_indices():
    start, stop = split_bounds(N, 1, 2)
    assert (start, stop) == (16, 32)
    assert tensor_slice("weight", OUT, 16, 32) == (0, 16, 32)
    assert tensor_slice("weight", IN, 64, 128) == (1, 64, 128)
    assert tensor_slice("qweight", OUT, 16, 32, GROUP) == (1, 2, 4)
    assert tensor_slice("qzeros", IN, 64, 128, GROUP) == (0, 2, 4)
    assert tensor_slice("scales", OUT, 16, 32, GROUP) == (1, 16, 32)
    assert tensor_slice("bias", IN, 64, 128) is None
    assert tensor_slice("weight_scale", IN, 64, 128) is None
    with pytest.raises(ModelLoadError, match="no linear weight kind|No linear weight kind"):
        tensor_slice("gamma", OUT, 0, 1)
