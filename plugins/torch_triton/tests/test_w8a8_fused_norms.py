"""A norm whose output feeds a W8A8 linear writes it quantized (codes and per-token scales) in
its own kernel, and the linear skips its quantization: the logits and greedy tokens are those of
the unfused path, and a decode step launches two kernels fewer per layer (QKV and gate/up)."""

import dataclasses
import functools
import os
import warnings

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from contextlib import contextmanager  # noqa: E402

import pytest  # noqa: E402
import triton  # noqa: E402
from conftest_triton import (  # noqa: E402
    DEVICE,
    INTERPRET,
    fp8_quantizing_needs_gpu,
    needs_gpu,
    needs_kernels,
)
from graph_steps import (  # noqa: E402
    PROMPTS,
    assert_graph_logits_close,
    greedy_logits,
    step_diffs,
)
from lmforge.messages import PytorchEngineConfig  # noqa: E402
from lmforge.model.loader import load_model_info  # noqa: E402
from lmforge_torch_triton import runner as runner_module  # noqa: E402
from lmforge_torch_triton.ops import Ops, build_ops  # noqa: E402
from quant_checkpoints import save_w8a8_model  # noqa: E402
from torch_runner_helpers import PagedDriver, PagedSeq  # noqa: E402

FP8 = torch.float8_e4m3fn


def unfused(monkeypatch):
    """Every linear takes its input as a float tensor again (the path before the fusion)."""
    monkeypatch.setattr(Ops, "input_quant_dtype", lambda self, w: None)


def make_runner(path, kernels: bool, device: str = "cpu", dtype: str = "float32",
                eager: bool = True, ops: Ops | None = None, **config):
    """A runner over the Triton op table (``kernels``; the interpreter's on the CPU), the
    reference one, or ``ops``; ``eager``: each step launches its kernels one by one."""
    config = PytorchEngineConfig(device=device, dtype=dtype, max_batch_size=8, eager_mode=eager,
                                 **config)
    with pytest.MonkeyPatch.context() as patch:
        if kernels or ops is not None:
            table = ops or build_ops(kernels=True)
            patch.setattr(runner_module, "get_ops", lambda device: table)
        return runner_module.TorchModelRunner(load_model_info(path), config)


def assert_same_logits(got: list[torch.Tensor], want: list[torch.Tensor], exact: bool) -> None:
    for g, w in zip(got, want, strict=True):
        if exact:
            assert torch.equal(g, w)
        else:
            torch.testing.assert_close(g, w, atol=2e-2, rtol=2e-2)


@contextmanager
def count_launches():
    """Counts Triton kernel launches (``kernel[grid](...)``) inside the block."""
    if INTERPRET:
        from triton.runtime.interpreter import InterpretedFunction as kernel_type
    else:
        kernel_type = triton.runtime.jit.JITFunction
    launches = []
    run = kernel_type.run

    def counting_run(self, *args, **kwargs):
        launches.append(self.fn.__name__)
        return run(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kernel_type, "run", counting_run)
        yield launches


def decode_launches(runner) -> list[str]:
    """The Triton kernels one decode step of one sequence launches, after its prefill."""
    driver = PagedDriver(runner)
    seq = PagedSeq()
    driver.step([(seq, PROMPTS[0])])
    with count_launches() as launches:
        driver.step([(seq, [5])])
    return launches


@pytest.mark.parametrize("dtype", [torch.int8, FP8], ids=["int8", "fp8"])
def test_fused_norms_give_the_unfused_logits_on_the_cpu(tmp_path, monkeypatch, dtype):
    save_w8a8_model(tmp_path, "compressed-tensors", dtype)
    fused = greedy_logits(make_runner(tmp_path, kernels=False), steps=4)
    unfused(monkeypatch)
    expected = greedy_logits(make_runner(tmp_path, kernels=False), steps=4)
    for got, want in zip(fused, expected, strict=True):
        assert torch.equal(got, want)


def test_the_norms_quantize_only_for_w8a8_linears(tmp_path):
    save_w8a8_model(tmp_path, "lmdeploy")
    runner = make_runner(tmp_path, kernels=False)
    layer = runner.model.weights.layers[0]
    ops = runner.model.ops
    assert ops.input_quant_dtype(layer.qkv) == torch.int8
    assert ops.input_quant_dtype(runner.model.weights.lm_head) is None
    assert ops.input_quant_dtype(None) is None
    x = torch.randn(3, layer.qkv.in_features)
    normed, residual = runner.model.norm(x, layer.input_norm, torch.randn_like(x), layer.qkv)
    assert normed.codes.dtype == torch.int8 and normed.scales.shape == (3,)
    plain, same_residual = runner.model.norm(x, layer.input_norm, residual)
    assert torch.equal(same_residual, residual + x) and plain.dtype == x.dtype
    # Gemma's ``1 + w`` norm has no fused form: it stays a float tensor for any consumer.
    offset, _ = ops.rms_norm_for(x, layer.input_norm, 1e-6, None, 1.0, layer.qkv)
    assert isinstance(offset, torch.Tensor) and offset.dtype == x.dtype


def check_triton_path(tmp_path, monkeypatch, dtype, device, act_dtype, steps):
    save_w8a8_model(tmp_path, "compressed-tensors", dtype)
    runner = make_runner(tmp_path, True, device, act_dtype)
    layers = len(runner.model.weights.layers)
    fused_launches = decode_launches(runner)
    fused = greedy_logits(runner, steps)
    unfused(monkeypatch)
    runner = make_runner(tmp_path, True, device, act_dtype)
    unfused_launches = decode_launches(runner)
    expected = greedy_logits(runner, steps, forced=fused)
    # Same codes, same matmuls: equal logits, but for fp8's split-K float atomics on a GPU,
    # whose order of addition varies from run to run.
    assert_same_logits(fused, expected, exact=device == "cpu" or dtype == torch.int8)
    # Per layer: the QKV and gate/up projections' own quantization kernels are gone.
    assert len(unfused_launches) - len(fused_launches) == 2 * layers, (
        fused_launches, unfused_launches)
    # Per layer: both norms, the attention output (for o_proj) and SiLU-and-mul.
    assert fused_launches.count("_quantize_rows_kernel") == 4 * layers


@pytest.mark.triton_interpret
@needs_kernels
def test_fused_norms_through_the_triton_kernels_int8(tmp_path, monkeypatch):
    check_triton_path(tmp_path, monkeypatch, torch.int8, DEVICE, "float32", steps=3)


@pytest.mark.triton_interpret
@needs_kernels
@fp8_quantizing_needs_gpu
def test_fused_norms_through_the_triton_kernels_fp8(tmp_path, monkeypatch):
    check_triton_path(tmp_path, monkeypatch, FP8, DEVICE, "float32", steps=3)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.int8, FP8], ids=["int8", "fp8"])
def test_fused_norms_on_the_gpu_in_bfloat16(tmp_path, monkeypatch, dtype):
    check_triton_path(tmp_path, monkeypatch, dtype, "cuda", "bfloat16", steps=8)


# Graph runners capture prompt steps of up to this many tokens (buckets 16, 32 and 64): the
# steps here are at most 18 tokens, and fewer buckets keep the GPU tests short.
GRAPH_STEP_TOKENS = 64


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("dtype", [torch.int8, FP8], ids=["int8", "fp8"])
def test_w8a8_in_cuda_graphs_gives_the_eager_logits(tmp_path, dtype, fused, monkeypatch):
    """A graph's steps (prompts replayed piecewise, decodes from the graph of their bucket) give
    the eager steps' logits, with the norms' fused quantization and without it. Each step's
    logits are copied before the next: a decode graph's are a view of its static output."""
    save_w8a8_model(tmp_path, "compressed-tensors", dtype)
    if not fused:
        unfused(monkeypatch)
    eager = greedy_logits(make_runner(tmp_path, True, "cuda", "bfloat16"), steps=8)
    runner = make_runner(tmp_path, True, "cuda", "bfloat16", eager=False,
                         max_prefill_token_num=GRAPH_STEP_TOKENS)
    got = greedy_logits(runner, steps=8, forced=eager)
    assert runner.graphs.replays >= 7 and runner.prompt_graphs.replays >= 1
    assert_graph_logits_close(got, eager)


def ulp_noise(fn, fraction: float, seed: int):
    """``fn`` whose bf16 result has ``fraction`` of its values moved by one ulp, up or down: the
    size of a legitimate difference between two kernels (another split count or tile)."""
    generator = torch.Generator("cuda").manual_seed(seed)

    def noisy(*args, **kwargs):
        out = fn(*args, **kwargs)
        target = kwargs.get("out")
        target = out if target is None else target
        pick = torch.rand(target.shape, device=target.device, generator=generator) < fraction
        up = torch.rand(target.shape, device=target.device, generator=generator) < 0.5
        bits = target.view(torch.int16)
        moved = torch.where(pick & (target != 0), bits + torch.where(up, 1, -1).to(bits.dtype),
                            bits)
        target.copy_(moved.view(target.dtype))
        return target

    return noisy


def split_decode_attention(q, k_cache, v_cache, block_tables, kv_lens, scale,
                           sliding_window=None, **kwargs):
    """Decode attention in 16-token tiles, split over up to four programs per sequence."""
    from lmforge_torch_triton.ops.triton_decode_attention import paged_decode_attention_splitk

    return paged_decode_attention_splitk(q, k_cache, v_cache, block_tables, kv_lens, scale,
                                         sliding_window, 4, block_n=16, **kwargs)


@pytest.mark.gpu
@needs_gpu
def test_w8a8_graph_and_noise_floor_diagnostic(tmp_path, monkeypatch):
    """Reports, for int8 and fp8, fused and unfused, each step's largest logit difference:
    graph against eager (copied each step, and as the runner's uncopied tensors), and the noise
    floor: eager against eager with decode attention split otherwise, and with one-ulp noise
    in the attention outputs. The table goes to the warnings summary; the test fails only
    where the graph's copied logits leave the noise floor's scale."""
    base = build_ops(kernels=True)
    noisy = dataclasses.replace(
        base, paged_decode_attention=ulp_noise(base.paged_decode_attention, 0.1, 0),
        paged_prefill_attention=ulp_noise(base.paged_prefill_attention, 0.1, 1))
    split = dataclasses.replace(base, paged_decode_attention=split_decode_attention)
    rows, failures = [], []
    for dtype, name in ((torch.int8, "int8"), (FP8, "fp8")):
        path = tmp_path / name
        path.mkdir()
        save_w8a8_model(path, "compressed-tensors", dtype)
        for fused in (True, False):
            with pytest.MonkeyPatch.context() as patch:
                if not fused:
                    unfused(patch)
                run = functools.partial(make_runner, path, True, "cuda", "bfloat16",
                                        max_prefill_token_num=GRAPH_STEP_TOKENS)
                eager = greedy_logits(run(), steps=6)
                views: list[torch.Tensor] = []
                graph = greedy_logits(run(eager=False), 6, forced=eager, returned=views)
                found = {
                    "graph": step_diffs(graph, eager),
                    "graph, uncopied": step_diffs(views, eager),
                    "eager, split attention": step_diffs(
                        greedy_logits(run(ops=split), 6, forced=eager), eager),
                    "eager, ulp noise": step_diffs(
                        greedy_logits(run(ops=noisy), 6, forced=eager), eager),
                }
            label = f"{name} {'fused' if fused else 'unfused'}"
            scale = max(float(e.abs().max()) for e in eager)
            rows.append(f"{label} (logits up to {scale:.2f}):")
            rows += [f"  {k:24s} {[round(v, 4) for v in d]}" for k, d in found.items()]
            floor = max(found["eager, split attention"] + found["eager, ulp noise"])
            if max(found["graph"]) > max(4 * floor, 0.05):
                failures.append(label)
    table = "\n".join(rows)
    print(table)
    warnings.warn("W8A8 graph diagnostic, max abs logit difference per step:\n" + table,
                  stacklevel=1)
    assert not failures, f"graph logits beyond the noise floor: {failures}\n{table}"
