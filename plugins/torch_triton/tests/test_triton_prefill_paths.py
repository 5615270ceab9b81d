"""The decoder over an int8 / int4 K/V cache through the Triton kernels (in Triton's interpreter)
against the reference ops: a prompt in chunks, a prefix-cache hit and mixed steps of decodes and
prompts. Both paths attend to a step's own tokens unquantized and to its cached prefix as the
cache holds it, so their logits agree step by step and so do their greedy tokens."""

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
from torch_runner_helpers import PagedDriver, PagedSeq, save_hf_model  # noqa: E402

PROMPT = [1, 17, 42, 99, 5, 64, 23, 88, 11, 7, 120, 3, 45]
OTHER = [1, 9, 77, 31, 56, 2, 100]
TAIL = [33, 44, 55]


def run_steps(model_dir, policy: int, kernels: bool, monkeypatch) -> list[torch.Tensor]:
    """Every step's logits: ``PROMPT`` in two chunks (the second beside a whole prompt), a
    sequence that shares ``PROMPT``'s first 8 tokens from the cache beside two decodes, then
    two decode steps of all three."""
    monkeypatch.setattr(runner_module, "get_ops", lambda device: build_ops(kernels=kernels))
    runner = runner_module.TorchModelRunner(
        load_model_info(model_dir),
        PytorchEngineConfig(device=DEVICE, dtype="float32", quant_policy=policy))
    driver = PagedDriver(runner)
    first, other = PagedSeq(), PagedSeq()
    steps = [driver.step([(first, PROMPT[:5])]),
             driver.step([(first, PROMPT[5:]), (other, OTHER)])]
    hit = driver.fork_prefix(first, 8)
    seqs = [first, other, hit]
    tokens = steps[-1].argmax(-1).tolist()
    steps.append(driver.step([(first, tokens[:1]), (other, tokens[1:]), (hit, TAIL)]))
    for _ in range(2):
        tokens = steps[-1].argmax(-1).tolist()
        steps.append(driver.step([(s, [t]) for s, t in zip(seqs, tokens, strict=True)]))
    return steps


@pytest.mark.triton_interpret
@needs_kernels
@pytest.mark.parametrize("policy", [0, 8, 4])
def test_chunks_and_prefix_hits_follow_the_reference(policy, tmp_path, monkeypatch):
    # Heads of 32: int4 keys are stored in the Hadamard basis.
    save_hf_model("llama", tmp_path, hidden_size=128)
    got = run_steps(tmp_path, policy, True, monkeypatch)
    want = run_steps(tmp_path, policy, False, monkeypatch)
    # The kernels and the reference round float32 K/V differently in the last bit, so a value on
    # an int8 / int4 rounding boundary may be stored as the neighbouring code: up to about 6e-4
    # of logits of magnitude 3 here; a wrong scale, zero point or block is off by 0.1 or more.
    tol = 2e-4 if policy == 0 else 2e-3
    for step, (g, w) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(g, w, atol=tol, rtol=tol, msg=f"step {step}")
        assert g.argmax(-1).tolist() == w.argmax(-1).tolist()
