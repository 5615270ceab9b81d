"""Runs one engine on the GPU and prints what the tensor-parallel GPU tests compare, as JSON.

    python tp_gpu_run.py tokens MODEL TP   # greedy tokens through the whole engine (float32)
    python tp_gpu_run.py logits MODEL TP   # prefill and graph-decode logits (bfloat16)

Each tensor-parallel engine runs in a process of its own: a process sets up the peer-memory
all-reduce for its first engine only.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

VOCAB = 1024
PROMPTS = [[random.Random(i).randrange(3, VOCAB) for _ in range(random.Random(i).randint(3, 90))]
           for i in range(12)]


def _paths(runner) -> dict:
    comm = runner.model.comm
    return {"peer_memory": getattr(comm, "fast", None) is not None,
            "graphs": runner.graphs is not None,
            "replays": runner.graphs.replays if runner.graphs is not None else 0}


def tokens(model: str, tp: int) -> dict:
    from lmforge import GenerationConfig, PytorchEngineConfig, pipeline

    cfg = PytorchEngineConfig(tp=tp, dtype="float32", block_size=16, cache_max_entry_count=0.05,
                              max_batch_size=16)
    gen = GenerationConfig(max_new_tokens=24, ignore_eos=True, top_k=1)
    with pipeline(model, backend_config=cfg) as pipe:
        runner = pipe.engine.loop.engine.runner
        out = [r.token_ids for r in pipe(PROMPTS, gen_config=gen)]
        return {"tokens": out, **_paths(runner)}


def logits(model: str, tp: int) -> dict:
    from lmforge.messages import PytorchEngineConfig
    from lmforge.model.loader import load_model_info
    from lmforge_torch_triton.runner import TorchModelRunner
    from torch_runner_helpers import PagedDriver, PagedSeq

    cfg = PytorchEngineConfig(tp=tp, dtype="bfloat16", max_batch_size=8)
    runner = TorchModelRunner(load_model_info(model), cfg)
    try:
        driver = PagedDriver(runner, num_blocks=128, block_size=16)
        seqs = [PagedSeq() for _ in PROMPTS[:4]]
        prefill = driver.step(list(zip(seqs, PROMPTS[:4], strict=True)), return_all_logits=True)
        decode = driver.step([(s, [7]) for s in seqs])  # a batch of 4 decodes: a graph replay
        return {"prefill": prefill.float().cpu().tolist(),
                "decode": decode.float().cpu().tolist(), **_paths(runner)}
    finally:
        runner.close()


if __name__ == "__main__":
    mode, model, tp = sys.argv[1], sys.argv[2], int(sys.argv[3])
    result = {"tokens": tokens, "logits": logits}[mode](model, tp)
    print("RESULT " + json.dumps(result))
