"""The new families through the Triton op table (every kernel in Triton's interpreter) against
transformers: per-head q/k norms in the rotary kernel, 1 + w norms, soft-capped attention, GeGLU
and the fused MoE kernel (its sorted and its decode-sized pair paths), in one decoder. On the
GPU the same table runs compiled."""

import os

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from conftest_triton import DEVICE, needs_kernels  # noqa: E402
from lmforge.messages import PytorchEngineConfig  # noqa: E402
from lmforge.model.loader import load_model_info  # noqa: E402
from lmforge_torch_triton import runner as runner_module  # noqa: E402
from lmforge_torch_triton.ops import build_ops  # noqa: E402
from torch_runner_helpers import PagedDriver, greedy, hf_greedy, save_hf_model  # noqa: E402

PROMPTS = [[1, 17, 42, 99, 5, 64, 23, 88, 11, 7, 120], [1, 9, 77, 31, 56, 2, 100]]
CASES = {
    "qwen3-sliding4": dict(kind="qwen3", use_sliding_window=True, sliding_window=4,
                           max_window_layers=1),
    "gemma2-window6": dict(kind="gemma2"),
    "qwen3_moe": dict(kind="qwen3_moe"),
    # Enough experts that the two-token decode steps take the MoE kernel's pair path.
    "qwen3_moe-16experts": dict(kind="qwen3_moe", num_experts=16),
    "mixtral-8experts": dict(kind="mixtral", num_local_experts=8),
}


def triton_ops():
    """The table a CUDA device gets; the ops these families add are kernels in it."""
    ops = build_ops(kernels=True)
    for name in ("fused_moe", "gelu_tanh_and_mul", "rope_and_store_kv", "rms_norm",
                 "paged_decode_attention", "paged_prefill_attention"):
        assert getattr(ops, name).__module__.split(".")[-1].startswith("triton_"), name
    return ops


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("name", list(CASES))
def test_family_decodes_like_transformers_through_the_triton_kernels(name, tmp_path,
                                                                     monkeypatch):
    reference_model = save_hf_model(**CASES[name], out=tmp_path)
    monkeypatch.setattr(runner_module, "get_ops", lambda device: triton_ops())
    runner = runner_module.TorchModelRunner(
        load_model_info(tmp_path), PytorchEngineConfig(device=DEVICE, dtype="float32"))
    outputs = greedy(PagedDriver(runner), PROMPTS, steps=6)
    assert outputs == [hf_greedy(reference_model, p, 6) for p in PROMPTS]
