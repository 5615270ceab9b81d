"""A norm whose output feeds a W8A8 linear writes it quantized (codes and per-token scales) in
its own kernel, and the linear skips its quantization: the logits and greedy tokens are those of
the unfused path, and a decode step launches two kernels fewer per layer (QKV and gate/up)."""

import os

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
from lmforge.messages import PytorchEngineConfig  # noqa: E402
from lmforge.model.loader import load_model_info  # noqa: E402
from lmforge_torch_triton import runner as runner_module  # noqa: E402
from lmforge_torch_triton.ops import Ops, build_ops  # noqa: E402
from quant_checkpoints import save_w8a8_model  # noqa: E402
from torch_runner_helpers import PagedDriver, PagedSeq  # noqa: E402

FP8 = torch.float8_e4m3fn
PROMPTS = [[1, 17, 42, 99, 5, 64, 23, 88, 11, 7, 120], [1, 9, 77, 31, 56, 2, 100]]


def unfused(monkeypatch):
    """Every linear takes its input as a float tensor again (the path before the fusion)."""
    monkeypatch.setattr(Ops, "input_quant_dtype", lambda self, w: None)


def make_runner(path, kernels: bool, device: str = "cpu", dtype: str = "float32",
                eager: bool = True):
    """A runner over the Triton op table (``kernels``; the interpreter's on the CPU) or the
    reference one; ``eager``: each decode step launches its kernels one by one."""
    config = PytorchEngineConfig(device=device, dtype=dtype, max_batch_size=8, eager_mode=eager)
    with pytest.MonkeyPatch.context() as patch:
        if kernels:
            ops = build_ops(kernels=True)
            patch.setattr(runner_module, "get_ops", lambda device: ops)
        return runner_module.TorchModelRunner(load_model_info(path), config)


def greedy_logits(runner, steps: int, forced: list[torch.Tensor] | None = None,
                  ) -> list[torch.Tensor]:
    """Each step's logits: one batched prefill of :data:`PROMPTS`, then greedy decode steps
    (teacher-forced with the argmax of ``forced``'s steps where given, so two runs whose logits
    differ in rounding still see the same tokens)."""
    driver = PagedDriver(runner)
    seqs = [PagedSeq() for _ in PROMPTS]
    logits = driver.step(list(zip(seqs, PROMPTS, strict=True)))
    out = [logits]
    for i in range(steps - 1):
        chosen = (forced[i] if forced is not None else logits).argmax(-1).tolist()
        logits = driver.step([(s, [t]) for s, t in zip(seqs, chosen, strict=True)])
        out.append(logits)
    return out


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


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("dtype", [torch.int8, FP8], ids=["int8", "fp8"])
def test_w8a8_in_cuda_graphs_gives_the_eager_logits(tmp_path, dtype, fused, monkeypatch):
    """A graph's steps (prompts replayed piecewise, decodes padded to a bucket with another
    split count, so not bit-equal) give the eager steps' logits, with the norms' fused
    quantization and without it."""
    save_w8a8_model(tmp_path, "compressed-tensors", dtype)
    if not fused:
        unfused(monkeypatch)
    eager = greedy_logits(make_runner(tmp_path, True, "cuda", "bfloat16"), steps=8)
    runner = make_runner(tmp_path, True, "cuda", "bfloat16", eager=False)
    assert_same_logits(greedy_logits(runner, steps=8, forced=eager), eager, exact=False)
