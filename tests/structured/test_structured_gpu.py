"""Constrained decoding on a CUDA GPU: the bitmask applies on the device as on the CPU, and
constrained requests (synchronous steps, CUDA graphs) share batches with queued-ahead ones."""

from __future__ import annotations

import json
import random

import pytest
import torch
from lmforge import GenerationConfig, PytorchEngineConfig, pipeline
from lmforge.structured.masks import apply_bitmask, bitmask_width

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

SCHEMA = {"type": "object", "properties": {"kind": {"enum": ["a", "b"]},
                                           "n": {"type": "integer", "minimum": 0, "maximum": 99}},
          "required": ["kind", "n"], "additionalProperties": False}


def test_bitmask_applies_on_the_device_as_on_the_cpu():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 1000, generator=gen)
    bitmask = torch.randint(-2**31, 2**31 - 1, (3, bitmask_width(1000)), dtype=torch.int32,
                            generator=gen)
    rows = torch.tensor([4, 0, 2])
    cpu, gpu = logits.clone(), logits.cuda()
    apply_bitmask(cpu, rows, bitmask)
    apply_bitmask(gpu, rows.cuda(), bitmask.cuda())
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.parametrize("eager", [True, False])
def test_constrained_and_free_requests_on_the_gpu(tiny_llama_dir, eager):
    rng = random.Random(3)
    prompts = [[rng.randrange(3, 49152) for _ in range(rng.randint(3, 60))] for _ in range(12)]
    constrained = GenerationConfig(max_new_tokens=48, top_k=0, temperature=1.0, random_seed=1,
                                   response_format={"type": "json_schema",
                                                    "json_schema": {"schema": SCHEMA}})
    free = GenerationConfig(max_new_tokens=24, ignore_eos=True, top_k=1)
    cfg = PytorchEngineConfig(dtype="float32", block_size=16, cache_max_entry_count=0.05,
                              eager_mode=eager, max_batch_size=32)
    with pipeline(str(tiny_llama_dir), backend_config=cfg) as pipe:
        assert pipe.engine.loop.engine.queue_ahead
        alone = pipe(prompts, gen_config=free)
        mixed = pipe(prompts, gen_config=[constrained if i % 3 else free
                                          for i in range(len(prompts))])
    for i, result in enumerate(mixed):
        if i % 3:
            assert result.finish_reason == "stop"
            reply = json.loads(result.text)  # checked by hand: the GPU machine has no jsonschema
            assert set(reply) == {"kind", "n"} and reply["kind"] in ("a", "b")
            assert isinstance(reply["n"], int) and 0 <= reply["n"] <= 99
        else:
            assert result.token_ids == alone[i].token_ids
