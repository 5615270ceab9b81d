"""The runner's warm-up launches every Triton kernel specialization that a server's prompt and
mixed steps need, checked without a GPU: each launch (in the interpreter) is classed the way
Triton keys its compiled kernels (constexpr values; integers as 1, a multiple of 16 or other;
tensors by dtype and 16-byte alignment; less what the kernel says not to specialize on), and
every class random steps meet must be among the warm-up's. A class missing there is a compile,
about a second, in the middle of serving."""

import os

import torch

if not torch.cuda.is_available():
    # Must precede the first import of Triton; with a GPU the kernels compile instead.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import inspect  # noqa: E402
import random  # noqa: E402
from contextlib import contextmanager  # noqa: E402

import pytest  # noqa: E402
import triton.language as tl  # noqa: E402
from conftest_triton import INTERPRET, needs_kernels  # noqa: E402
from lmforge.messages import PytorchEngineConfig  # noqa: E402
from lmforge.model.loader import load_model_info  # noqa: E402
from lmforge_torch_triton import runner as runner_module  # noqa: E402
from lmforge_torch_triton.ops import build_ops  # noqa: E402
from lmforge_torch_triton.piecewise_graph import PromptGraphs  # noqa: E402
from lmforge_torch_triton.warmup import warm_up  # noqa: E402
from torch_runner_helpers import random_serving_step, save_hf_model  # noqa: E402

pytestmark = [pytest.mark.triton_interpret, needs_kernels,
              pytest.mark.skipif(not INTERPRET, reason="classes launches in the interpreter")]

BLOCK, BLOCKS = 64, 4096


def specialization(fn, args: tuple, kwargs: dict) -> tuple:
    """How Triton would key this launch of ``fn`` (an interpreted kernel)."""
    params = list(inspect.signature(fn.fn).parameters.values())
    values = dict(zip([p.name for p in params], args, strict=False)) | kwargs
    skip = set(fn.kwargs.get("do_not_specialize") or ())
    skip_align = set(fn.kwargs.get("do_not_specialize_on_alignment") or ())
    key = [fn.fn.__name__]
    for p in params:
        value = values.get(p.name, p.default)
        if p.annotation in (tl.constexpr, "tl.constexpr"):
            key.append((p.name, value))
        elif isinstance(value, torch.Tensor):
            key.append((p.name, value.dtype,
                        p.name in skip_align or value.data_ptr() % 16 == 0))
        elif isinstance(value, bool) or value is None:
            key.append((p.name, value))
        elif isinstance(value, int) and p.name not in skip:
            key.append((p.name, 1 if value == 1 else 16 if value % 16 == 0 else "int"))
    return tuple(key)


@contextmanager
def recorded_launches():
    from triton.runtime.interpreter import InterpretedFunction

    seen: dict[tuple, int] = {}
    run = InterpretedFunction.run

    def recording(self, *args, grid, warmup, **kwargs):
        key = specialization(self, args, kwargs)
        seen[key] = seen.get(key, 0) + 1
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    InterpretedFunction.run = recording
    try:
        yield seen
    finally:
        InterpretedFunction.run = run


@pytest.mark.parametrize("quant_policy", [0, 8])
def test_random_steps_need_no_specialization_the_warm_up_did_not_launch(tmp_path, monkeypatch,
                                                                       quant_policy):
    save_hf_model("llama", tmp_path, hidden_size=256, num_attention_heads=8,
                  num_key_value_heads=2, max_position_embeddings=4096)
    monkeypatch.setattr(runner_module, "get_ops", lambda device: build_ops(kernels=True))
    info = load_model_info(tmp_path)
    runner = runner_module.TorchModelRunner(info, PytorchEngineConfig(
        device="cpu", dtype="float32", quant_policy=quant_policy, max_batch_size=64,
        session_len=4096))
    runner.allocate_cache(BLOCKS, BLOCK)
    # As on a GPU: prompt steps run as stretches (eagerly here) with attention between them.
    runner.prompt_graphs = PromptGraphs(runner.model, runner.kv_caches, 2048, runner.device,
                                        capture=False)
    runner.prompt_graphs.capture_all()
    with recorded_launches() as warm:
        warm_up(runner.forward, BLOCK, BLOCKS, max_blocks=64, max_step_tokens=8192,
                vocab_size=info.config.vocab_size)
    rng = random.Random(quant_policy)
    with recorded_launches() as served:
        for _ in range(8):
            step = random_serving_step(rng, info.config.vocab_size, BLOCK, BLOCKS)
            if not step.is_decode:  # decodes alone replay graphs captured at start-up
                runner.execute(step)
    missing = [key for key in served if key not in warm]
    assert not missing, "\n".join(
        f"{key[0]}: " + ", ".join(str(k) for k in key[1:] if k not in near)
        for key in missing for near in [min(
            (w for w in warm if w[0] == key[0]),
            key=lambda w: sum(a != b for a, b in zip(w, key, strict=False)), default=())])
