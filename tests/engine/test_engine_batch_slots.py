"""The pytorch engine's device-resident block tables (batch slots, updated by each step's new
blocks) give the same tokens as tables rebuilt from the batch's lists every step, through
preemption, prefix-cache hits, chunked prefill, finished and aborted sequences, arrivals
mid-run and a failed step; on the CPU, and on a GPU with CUDA graphs against eager steps."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from lmforge import GenerationConfig, PytorchEngineConfig
from lmforge.engine.builder import build_llm_engine
from lmforge.engine.request import Request

FAIL_AT = 14  # the runner raises after this step has run (its tables written)


def without_slots(batch):
    """The batch as a runner that keeps no tables sees it: only the full lists."""
    return dataclasses.replace(batch, slots=[], new_block_slots=[], new_block_cols=[],
                               new_block_ids=[])


def workload() -> dict[int, list[tuple[list[int], int, bool]]]:
    """Arrivals by step: (prompt, max_new_tokens, may reuse cached prefixes)."""
    rng = random.Random(7)

    def prompt(n):
        return [rng.randrange(3, 49152) for _ in range(n)]

    shared = prompt(40)
    return {
        # Prompts longer than the step's 32 tokens prefill in chunks.
        0: [(shared + prompt(9), 14, True), (prompt(70), 12, False), (prompt(5), 6, False),
            (prompt(20), 18, False), (prompt(33), 9, False)],
        # Arrivals into a running batch, one reusing the first prompt's cached blocks.
        6: [(shared + prompt(3), 10, True), (prompt(12), 16, False)],
        11: [(prompt(50), 8, False), (shared[:32] + prompt(4), 7, True)],
    }


def run(engine, resident: bool) -> tuple[list[tuple[list[int], str]], int]:
    """Drive ``engine`` step by step through :func:`workload` (request 1 aborted at step 9);
    the tokens and finish reason of each request, and how many steps ran with slots."""
    runner = engine.runner
    engine.queue_ahead = True  # the GPU's order of work: steps read pending tokens
    execute, steps, slotted = runner.execute, [0], [0]

    def run_step(batch):
        slotted[0] += bool(batch.slots)
        logits = execute(batch if resident else without_slots(batch))
        steps[0] += 1
        if steps[0] == FAIL_AT:
            raise RuntimeError("a failed step")
        return logits

    runner.execute = run_step
    arrivals, outputs, reasons = workload(), {}, {}

    def sink(i):
        def take(out):
            outputs[i].extend(out.token_ids)
            reasons[i] = out.finish_reason or reasons.get(i)
        return take

    requests, step = [], 0
    while step == 0 or engine.has_work or any(s >= step for s in arrivals):
        for prompt, new, cached in arrivals.get(step, []):
            i = len(requests)
            outputs[i] = []
            gen = GenerationConfig(max_new_tokens=new, ignore_eos=True, top_k=1)
            requests.append(Request(prompt, gen, sink(i), allow_prefix_match=cached))
            engine.add_request(requests[-1])
        if step == 9:
            engine.abort_request(requests[1].request_id)
        engine.step()
        if resident:
            assert_tables_held(engine)
        step += 1
        assert step < 500
    counters = engine.counters
    assert counters.preemptions_total > 0 and counters.prefix_cache_hit_tokens > 0
    assert counters.failed_steps_total == 1
    assert engine.scheduler.block_manager.num_used_blocks == 0
    return [(outputs[i], reasons[i]) for i in range(len(requests))], slotted[0]


def assert_tables_held(engine) -> None:
    """Every running sequence's slot holds the blocks the scheduler says it does."""
    table = engine.runner.block_tables.table.cpu()
    for seq in engine.scheduler.running:
        n = seq.num_slot_blocks
        assert table[seq.slot, :n].tolist() == seq.block_ids[:n]


def build(model_dir, **config):
    cfg = PytorchEngineConfig(dtype="float32", block_size=16, cache_max_entry_count=12,
                              max_prefill_token_num=32, max_batch_size=8, **config)
    return build_llm_engine(str(model_dir), "pytorch", cfg)


def test_resident_tables_give_the_list_path_tokens(tiny_llama_dir):
    got, want = (run(build(tiny_llama_dir, device="cpu"), resident) for resident in (True, False))
    assert got[0] == want[0]
    assert got[1] > 30  # the steps really named slots
    reasons = [reason for _, reason in got[0]]
    assert reasons[1] == "abort" and reasons.count("length") == len(reasons) - 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_graphs_on_resident_tables_give_the_eager_list_path_tokens(tiny_llama_dir):
    resident = build(tiny_llama_dir, device="cuda")
    got = run(resident, True)
    assert resident.runner.graphs.replays > 0
    eager = build(tiny_llama_dir, device="cuda", eager_mode=True)
    assert eager.runner.graphs is None
    assert got[0] == run(eager, False)[0]
