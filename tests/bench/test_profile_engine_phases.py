"""scripts/profile_engine_phases.py on the CPU: the bench runs under its timers, the figures add up,
and the engine is left as it was."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "profile_engine_phases.py"


@pytest.fixture(scope="module")
def profiler():
    spec = importlib.util.spec_from_file_location("profile_engine_phases", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def workload(model: Path, *extra: str) -> list[str]:
    return ["--", str(model), "--dataset", "synthetic", "--num-prompts", "4", "--input-len", "8",
            "--output-len", "6", *extra]


def test_constrained_run_times_every_phase(profiler, tiny_model, tmp_path):
    from lmforge.engine.llm_engine import LLMEngine

    step = LLMEngine.step
    out, trace = tmp_path / "phases.json", tmp_path / "trace.json"
    report = profiler.main(["--json", str(out), "--trace", str(trace), "--trace-start", "1",
                            "--trace-steps", "2",
                            *workload(tiny_model, "--warmup", "2",
                                      "--response-format", '{"type": "json_object"}')])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["throughput"]["num_requests"] == 4  # the timed run, not the warm-up's 2
    figures = report["buckets"]["all"]
    assert figures["steps"] >= 6
    phases = sum(figures[f"{p}_ms"] for p in profiler.PHASES)
    assert phases == pytest.approx(figures["wall_ms"], rel=1e-6)
    for phase in ("schedule", "build_batch", "sampling_batch", "execute", "mask_fill", "sample",
                  "process", "grammar_advance"):
        assert figures[f"{phase}_ms"] > 0, phase
    # On the CPU the device's time is the forward's and the sampling's, inside the wall time.
    assert 0 < figures["device_ms"] <= figures["wall_ms"]
    assert 0 <= figures["device_idle"] < 1
    steps = sum(f["steps"] for name, f in report["buckets"].items() if name != "all")
    assert steps == figures["steps"]
    assert "traceEvents" in json.loads(trace.read_text())
    assert LLMEngine.step is step  # the wrappers are gone


def test_unconstrained_run_fills_no_mask(profiler, tiny_model, capsys):
    report = profiler.main(workload(tiny_model))
    figures = report["buckets"]["all"]
    assert figures["mask_fill_ms"] == 0 and figures["grammar_advance_ms"] == 0
    assert figures["execute_ms"] > 0
    table = capsys.readouterr().out
    assert "wait%" in table and "idle%" in table


@pytest.mark.gpu
def test_device_time_comes_from_cuda_events(profiler, tiny_model):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    report = profiler.main(workload(tiny_model, "--response-format", '{"type": "json_object"}'))
    figures = report["buckets"]["all"]
    assert report["device"] != "cpu" and figures["device_ms"] > 0
    # Steps are queued ahead, so a step's device time may exceed its own wall time; the device
    # cannot be busy for longer than the run.
    assert figures["device_ms"] * figures["steps"] <= report["throughput"]["elapsed_s"] * 1e3
    assert 0 <= figures["device_idle"] < 1


class _Event:
    """A CUDA event's stand-in: recorded at ``ms`` on the device's clock."""

    def __init__(self, ms: float):
        self.ms = ms

    def elapsed_time(self, later: _Event) -> float:
        return later.ms - self.ms


def test_device_idle_is_measured_between_steps_on_the_device_clock(profiler):
    recorder = profiler.PhaseRecorder()
    recorder.cuda = True

    def step(rows, wall_ms, *event_ms):
        record = profiler.StepRecord(rows=rows, wall=wall_ms / 1e3)
        record.events = [_Event(ms) if ms is not None else None for ms in event_ms]
        recorder.records.append(record)

    # A long prompt step (100 ms on the device), then decodes queued ahead (no gap), then a
    # decode the host queued 2 ms late. The decode after the prompt step waits 100 ms on the
    # host, but the device was never idle before it.
    step(64, 30, 0, 99, 99, 100)
    step(300, 100, 100, 119, 119, 120)
    step(300, 20, 120, 139, 139, 140)
    step(300, 22, 142, 161, 161, 162)
    gaps = recorder.device_gaps()
    assert gaps == [None, 0.0, 0.0, pytest.approx(0.002)]
    figures = recorder._figures(list(zip(recorder.records, gaps, strict=True))[1:])
    assert figures["device_idle"] == pytest.approx(2 / 62)
    # The host's wall time would have charged the prompt step's 100 ms to the decodes.
    assert figures["wall_ms"] > figures["device_ms"] * 2
