"""After the runner's warm-up, no step a server can meet compiles a Triton kernel: prompts
beside any number of decodes, block tables of any width, prompts with and without a cached
prefix. A compile there stalls every request in the step for about a second."""

from __future__ import annotations

import logging
import random

import pytest
import torch
from lmforge.engine.batch import ForwardBatch
from lmforge.messages import PytorchEngineConfig
from lmforge.model.loader import load_model_info
from torch_runner_helpers import save_hf_model

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from lmforge_torch_triton import compile_watch  # noqa: E402
from lmforge_torch_triton.runner import TorchModelRunner  # noqa: E402
from triton import knobs  # noqa: E402

BLOCK = 64
BLOCKS = 4096


def random_step(rng: random.Random, vocab: int) -> ForwardBatch:
    """Decodes first, then one to three prompt chunks, as the scheduler orders a mixed step."""
    q_lens, kv_lens = [], []
    for _ in range(rng.choice([0, 1, 2, 3, 5, 8, 13, 16, 17, 31, 40])):
        q_lens.append(1)
        kv_lens.append(rng.randint(1, 1500))
    for _ in range(rng.randint(0 if q_lens else 1, 3)):
        chunk = rng.choice([1, 2, 15, 16, 17, 33, 64, rng.randint(1, 400)])
        prefix = rng.choice([0, 0, rng.randint(1, 1000)])
        q_lens.append(chunk)
        kv_lens.append(prefix + chunk)
    tables, first = [], rng.randrange(BLOCKS)
    for kv_len in kv_lens:
        width = -(-kv_len // BLOCK)
        tables.append([(first + i) % BLOCKS for i in range(width)])
        first += width
    return ForwardBatch(input_ids=[rng.randrange(vocab) for _ in range(sum(q_lens))],
                        q_lens=q_lens, kv_lens=kv_lens, block_tables=tables,
                        need_logits=[True] * len(q_lens), block_size=BLOCK)


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
            logits = runner.execute(random_step(rng, info.config.vocab_size))
        torch.cuda.synchronize()
    assert torch.isfinite(logits).all()
    assert compile_watch.compiles_after_warm_up == before, caplog.text
    runner.close()
