"""The turbomind runner on a CUDA GPU against transformers, against the PyTorch reference of its
step, eager against CUDA graphs, and a converted folder against the HF folder it came from.

Tolerances: logits within 2e-2 (float16) / 6e-2 (bfloat16) of the reference step computed in
the same dtype, and of transformers in float32 within 5e-2 / 1.5e-1; greedy tokens: each token
is transformers' argmax given the same prefix (teacher-forced, in float32), except where the two
candidates score within the logit tolerance above (a near-tie that 16-bit arithmetic may flip).
"""

from __future__ import annotations

import copy
import random

import pytest
import torch
from lmforge_turbomind_cuda.library import library_path
from torch_runner_helpers import PagedDriver, PagedSeq, greedy, hf_logits, save_hf_model
from turbomind_helpers import (
    KERNEL_TINY,
    ReferenceRunner,
    assert_greedy_near_reference,
    hf_greedy_cuda,
    make_turbomind_runner,
    save_internlm2_kernel_shape,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not library_path().is_file(), reason="libturbomind.so is not built"),
]

MODELS = {
    "llama": lambda d: save_hf_model("llama", d, **KERNEL_TINY),
    "llama-head128": lambda d: save_hf_model("llama", d, hidden_size=256, intermediate_size=512,
                                             num_attention_heads=2, num_key_value_heads=1),
    "qwen2-bias": lambda d: save_hf_model("qwen2", d, **KERNEL_TINY),
    "mistral-window": lambda d: save_hf_model("mistral", d, sliding_window=6, **KERNEL_TINY),
    "internlm2": save_internlm2_kernel_shape,
}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
REF_TOL = {"float16": dict(atol=2e-2, rtol=2e-2), "bfloat16": dict(atol=6e-2, rtol=6e-2)}
HF_TOL = {"float16": dict(atol=5e-2, rtol=5e-2), "bfloat16": dict(atol=1.5e-1, rtol=1.5e-1)}
rng = random.Random(0)
PROMPTS = [[rng.randrange(3, 128) for _ in range(rng.randint(3, 90))] for _ in range(6)]


@pytest.fixture(scope="module", params=list(MODELS))
def model(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    return path, MODELS[request.param](path)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_prefill_logits(model, dtype):
    path, hf = model
    runner = make_turbomind_runner(path, dtype, eager_mode=True)
    got = PagedDriver(runner).step([(PagedSeq(), p) for p in PROMPTS[:3]], return_all_logits=True)
    ref = ReferenceRunner(path, DTYPES[dtype], "cuda")
    want = PagedDriver(ref).step([(PagedSeq(), p) for p in PROMPTS[:3]], return_all_logits=True)
    torch.testing.assert_close(got, want, **REF_TOL[dtype])
    expected = torch.cat([hf_logits(hf, p) for p in PROMPTS[:3]]).cuda()
    torch.testing.assert_close(got, expected, **HF_TOL[dtype])
    runner.close()


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_greedy_tokens_equal_transformers(model, dtype):
    path, hf = model
    hf_gpu = copy.deepcopy(hf).to("cuda", torch.float32)
    runner = make_turbomind_runner(path, dtype)
    got = greedy(PagedDriver(runner, num_blocks=256, block_size=16), PROMPTS, steps=16)
    assert runner.graphs is not None and runner.graphs.replays > 0
    assert_greedy_near_reference(hf_gpu, PROMPTS, got, HF_TOL[dtype]["atol"])
    runner.close()


def test_cuda_graph_steps_agree_with_eager(model):
    path, _ = model
    results = {}
    for eager in (True, False):
        runner = make_turbomind_runner(path, "float16", eager_mode=eager)
        driver = PagedDriver(runner, num_blocks=256, block_size=16)
        # 1 and 3 sequences: an exact bucket and a padded one.
        results[eager] = [greedy(driver, PROMPTS[:1], 12), greedy(driver, PROMPTS[:3], 12)]
        assert (runner.graphs is None) == eager
        runner.close()
    assert results[True] == results[False]


def test_converted_folder_runs_like_its_source(model, tmp_path):
    from lmforge.model.loader import load_model_info
    from lmforge_turbomind_cuda.converted import write_converted

    path, _ = model
    write_converted(load_model_info(path), tmp_path / "tm", torch.bfloat16)
    logits = []
    for source in (path, tmp_path / "tm"):
        runner = make_turbomind_runner(source, "bfloat16", eager_mode=True)
        logits.append(PagedDriver(runner).step([(PagedSeq(), p) for p in PROMPTS[:2]]))
        runner.close()
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=0)


def test_engine_pipeline_with_turbomind_config(tmp_path, tokenizer_dir):
    """The whole engine (scheduler, queue-ahead steps, sampler) on the turbomind runner."""
    import shutil

    from lmforge import GenerationConfig, TurbomindEngineConfig, pipeline

    hf = save_hf_model("llama", tmp_path, **KERNEL_TINY)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    hf_gpu = copy.deepcopy(hf).to("cuda", torch.float32)
    cfg = TurbomindEngineConfig(dtype="float16", cache_max_entry_count=0.05, session_len=256)
    with pipeline(str(tmp_path), backend_config=cfg) as pipe:
        assert type(pipe.engine.loop.engine.runner).__name__ == "TurbomindRunner"
        got = pipe(PROMPTS, gen_config=GenerationConfig(max_new_tokens=12, top_k=1))
    # Without ignore_eos: it masks the end-of-sequence id, which the reference's argmax may be
    # (the tokenizer's id 2 was, on two of these prompts). Teacher-forced like the runner's
    # greedy test: a tiny random model's top logits are close, so 16-bit arithmetic may flip a
    # near-tie.
    assert_greedy_near_reference(hf_gpu, PROMPTS, [r.token_ids for r in got],
                                 HF_TOL["float16"]["atol"])


def test_demo_model_greedy_equals_transformers(smollm2_gguf):
    """SmolLM2 (head_dim 64, 9 heads over 3) from its GGUF file, converted as it loads."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name,
                                              dtype=torch.float16).cuda().eval()
    prompts = [[1, 504, 3458, 282, 4649, 314, 253, 1345, 28, 2], [1, 9690, 28, 1330, 346, 2]]
    expected = [hf_greedy_cuda(hf, p, 16) for p in prompts]
    runner = make_turbomind_runner(smollm2_gguf, "float16")
    got = greedy(PagedDriver(runner, num_blocks=64, block_size=16), prompts, steps=16)
    assert [g[:4] for g in got] == [e[:4] for e in expected]
    assert sum(g == e for g, e in zip(got, expected, strict=True)) >= 1
    runner.close()
