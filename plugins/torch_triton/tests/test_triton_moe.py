"""The fused MoE Triton kernel against the PyTorch reference: expert alignment, SwiGLU and GeGLU
experts, experts no token chose, tokens routed by the reference router, the decode-sized pair
path; and on the GPU at Mixtral-8x7B's and Qwen3-30B-A3B's shapes, in a CUDA graph too."""

import os

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from conftest_triton import (  # noqa: E402
    DEVICE,
    DTYPES,
    assert_close,
    make_generator,
    needs_gpu,
    needs_kernels,
    randn,
)
from lmforge_torch_triton.ops import reference_moe  # noqa: E402
from lmforge_torch_triton.ops.triton_moe import (  # noqa: E402
    MoEConfig,
    fused_moe,
    fused_moe_with_config,
    moe_align,
    moe_route,
    use_pair_path,
)


def make_moe(tokens, hidden, inter, experts, top_k, dtype, seed=0, renormalize=True):
    """Inputs of one MoE layer, routed by the reference router; weights scaled so each
    projection's outputs are about standard-normal."""
    gen = make_generator(seed)
    x = randn((tokens, hidden), dtype, gen)
    gate_up = (randn((experts, 2 * inter, hidden), torch.float32, gen) / hidden**0.5).to(dtype)
    down = (randn((experts, hidden, inter), torch.float32, gen) / inter**0.5).to(dtype)
    router = randn((tokens, experts), torch.float32, gen)
    weights, ids = moe_route(router, top_k, renormalize)
    return x, gate_up, down, weights, ids


def check_moe(tokens, hidden, inter, experts, top_k, dtype, activation="silu", config=None,
              seed=0, renormalize=True):
    args = make_moe(tokens, hidden, inter, experts, top_k, dtype, seed, renormalize)
    if config is None:
        out = fused_moe(*args, activation)
    else:
        out = fused_moe_with_config(*args, activation, config)
    assert out.shape == (tokens, hidden) and out.dtype == dtype
    assert_close(out, reference_moe.fused_moe(*args, activation))


@pytest.mark.triton_interpret
@needs_kernels
def test_align_sorts_pairs_into_expert_blocks():
    ids = torch.tensor([[2, 0], [2, 3], [0, 2]], dtype=torch.int32, device=DEVICE)
    sorted_pairs, block_experts, block_rows = moe_align(ids, 5, 4)
    # Expert 0: pairs 1 and 4; expert 2: pairs 0, 2 and 5; expert 3: pair 3; each run padded
    # to 4 rows. Six pairs over at most five experts can take 6 blocks; the last three are empty.
    assert block_rows.tolist() == [2, 3, 1, 0, 0, 0]
    assert block_experts[:3].tolist() == [0, 2, 3]
    assert sorted_pairs[0:2].tolist() == [1, 4]
    assert sorted_pairs[4:7].tolist() == [0, 2, 5]
    assert sorted_pairs[8:9].tolist() == [3]


@pytest.mark.triton_interpret
@needs_kernels
def test_align_many_pairs_over_chunks_and_blocks():
    """More pairs than one chunk of the kernel, more experts than pairs per expert: every pair
    lands once, in its expert's run, in pair order."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 40, (300, 3), generator=gen, dtype=torch.int32).to(DEVICE)
    sorted_pairs, block_experts, block_rows = moe_align(ids, 40, 16)
    flat = ids.flatten().cpu()
    placed = []
    for block, (expert, rows) in enumerate(zip(block_experts.tolist(), block_rows.tolist(),
                                               strict=True)):
        pairs = sorted_pairs[block * 16: block * 16 + rows].cpu()
        assert (flat[pairs.long()] == expert).all()
        placed += pairs.tolist()
    assert sorted(placed) == list(range(flat.numel()))
    assert placed == sorted(placed, key=lambda pair: int(flat[pair]))  # stable within an expert


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("experts,top_k", [(8, 2), (60, 8)])
def test_route_matches_reference(experts, top_k, renormalize):
    # float32 logits: 16-bit ones tie often, and a tie may be broken either way.
    logits = randn((9, experts), torch.float32, make_generator(experts)) * 3
    weights, ids = moe_route(logits, top_k, renormalize)
    ref_weights, ref_ids = reference_moe.moe_route(logits, top_k, renormalize)
    assert torch.equal(ids.long(), ref_ids)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-5, atol=1e-6)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
def test_fused_moe_matches_reference(dtype, activation):
    # Inter and hidden not multiples of the tiles; 6 experts for 5 tokens x 2: some get none.
    check_moe(5, 48, 40, 6, 2, dtype, activation)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("config", [MoEConfig(16, 32, 32), MoEConfig(32, 16, 16, num_warps=2)],
                         ids=["16x32x32", "32x16x16"])
def test_fused_moe_tiles_and_many_small_experts(config):
    """Qwen3-MoE's kind: many experts, several per token, a block holding several pairs."""
    check_moe(24, 32, 24, 16, 4, torch.float32, config=config, seed=3)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("renormalize", [True, False], ids=["renormalized", "softmax"])
@pytest.mark.parametrize("experts,top_k", [(16, 2), (48, 8)], ids=["top2", "top8"])
@pytest.mark.parametrize("tokens", [1, 2, 3])
def test_pair_path_matches_reference(tokens, experts, top_k, renormalize):
    """Decode-sized calls skip the alignment: Mixtral's (renormalized top-2) and Qwen3-MoE's
    kinds of routing, and softmax weights left as they are."""
    assert use_pair_path(tokens, top_k, experts)
    check_moe(tokens, 40, 24, experts, top_k, torch.bfloat16, seed=tokens,
              renormalize=renormalize)


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("dtype,ids_dtype", [(torch.float32, torch.int64),
                                             (torch.bfloat16, torch.int32)], ids=str)
def test_pair_path_shared_experts(dtype, ids_dtype):
    """Tokens sharing experts (one program gathers all their pairs), a token choosing one
    expert twice, GeGLU, a hidden size no tile divides, and the reference router's int64 ids."""
    x, gate_up, down, _, _ = make_moe(4, 37, 20, 16, 2, dtype)
    ids = torch.tensor([[0, 1], [1, 0], [0, 1], [5, 5]], dtype=ids_dtype, device=DEVICE)
    weights = torch.tensor([[0.7, 0.3], [0.6, 0.4], [0.5, 0.5], [0.2, 0.8]], device=DEVICE)
    assert use_pair_path(4, 2, 16)
    out = fused_moe(x, gate_up, down, weights, ids, "gelu_tanh")
    assert_close(out, reference_moe.fused_moe(x, gate_up, down, weights, ids, "gelu_tanh"))


def test_pair_path_only_where_tokens_seldom_share_experts():
    assert use_pair_path(1, 2, 8) and use_pair_path(1, 8, 128)
    assert use_pair_path(8, 8, 128) and not use_pair_path(9, 8, 128)
    assert use_pair_path(2, 2, 8) and not use_pair_path(3, 2, 8)


@pytest.mark.triton_interpret
@needs_kernels
def test_fused_moe_rejects_mismatched_experts():
    x, gate_up, down, weights, ids = make_moe(3, 16, 8, 4, 2, torch.float32)
    with pytest.raises(ValueError, match="down must be"):
        fused_moe(x, gate_up, down[:, :, :4], weights, ids)


# (hidden, expert intermediate, experts, top_k) of Mixtral-8x7B and Qwen3-30B-A3B.
MIXTRAL = (4096, 14336, 8, 2)
QWEN3_MOE = (2048, 768, 128, 8)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("shape", [MIXTRAL, QWEN3_MOE], ids=["mixtral", "qwen3_moe"])
@pytest.mark.parametrize("tokens", [1, 2, 8, 16, 256, 2048])
def test_fused_moe_family_shapes(shape, tokens):
    hidden, inter, experts, top_k = shape
    check_moe(tokens, hidden, inter, experts, top_k, torch.bfloat16)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("tokens", [1, 8, 64], ids=["pairs-1", "pairs-8", "sorted-64"])
def test_fused_moe_replays_in_a_cuda_graph(tokens):
    """A decode step's MoE captures, on the pair path and the sorted one: alignment and kernels
    need no host sync, and a replay with other routing gives that routing's result."""
    hidden, inter, experts, top_k = QWEN3_MOE
    assert use_pair_path(tokens, top_k, experts) == (tokens < 64)
    x, gate_up, down, weights, ids = make_moe(tokens, hidden, inter, experts, top_k,
                                              torch.bfloat16)
    fused_moe(x, gate_up, down, weights, ids)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fused_moe(x, gate_up, down, weights, ids)
    _, _, _, new_weights, new_ids = make_moe(tokens, hidden, inter, experts, top_k,
                                             torch.bfloat16, seed=5)
    weights.copy_(new_weights)
    ids.copy_(new_ids)
    graph.replay()
    assert_close(out, reference_moe.fused_moe(x, gate_up, down, weights, ids))
