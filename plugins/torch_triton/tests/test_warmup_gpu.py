"""After the runner's warm-up, no step a server can meet compiles a Triton kernel: prompts
beside any number of decodes, block tables of any width, prompts with and without a cached
prefix. A compile there stalls every request in the step for about a second."""

from __future__ import annotations

import logging
import random

import pytest
import torch
from lmforge.messages import PytorchEngineConfig
from lmforge.model.loader import load_model_info
from torch_runner_helpers import random_serving_step, save_hf_model

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from lmforge_torch_triton import compile_watch  # noqa: E402
from lmforge_torch_triton.runner import TorchModelRunner  # noqa: E402
from triton import knobs  # noqa: E402

BLOCK = 64
BLOCKS = 4096


@pytest.mark.parametrize("quant_policy", [0, 8, 4])
def test_no_kernel_compiles_after_warm_up(tmp_path, quant_policy, caplog):
    save_hf_model("llama", tmp_path, hidden_size=256, num_attention_heads=8,
                  num_key_value_heads=2, max_position_embeddings=4096)
    info = load_model_info(tmp_path)
    runner = TorchModelRunner(info, PytorchEngineConfig(
        device="cuda", dtype="bfloat16", quant_policy=quant_policy, max_batch_size=64,
        session_len=4096))
    runner.allocate_cache(BLOCKS, BLOCK)
    assert knobs.runtime.jit_post_compile_hook is compile_watch._after
    before = compile_watch.compiles_after_warm_up
    rng = random.Random(quant_policy)
    with caplog.at_level(logging.INFO, logger=compile_watch.__name__):
        for _ in range(80):
            logits = runner.execute(random_serving_step(rng, info.config.vocab_size, BLOCK, BLOCKS))
        torch.cuda.synchronize()
    assert torch.isfinite(logits).all()
    assert compile_watch.compiles_after_warm_up == before, caplog.text
    runner.close()
