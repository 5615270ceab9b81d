"""Where an engine step's time goes, host and device, on a throughput workload.

Runs ``lmforge bench throughput`` in this process (every argument after the script's own is
the bench's: the model, --dataset, --num-prompts, --response-format, --load-format dummy,
--max-batch-size, --backend, ...) with timers wrapped around the engine's phases from outside:
the engine's code is unchanged and pays nothing when this script is not running it. Each step's
forward and sampling are bracketed by CUDA events, so the device's busy time is measured beside
the host's; on a CPU the device time is the wall time of the forward and the sampling.

  python scripts/profile_engine_phases.py [--json FILE] [--trace FILE] -- MODEL \\
      --load-format dummy --dataset sharegpt --num-prompts 1000 [--response-format FILE]

Prints, per bucket of rows in the step (1, 2-63, 64-255, 256+), the steps, the host's
milliseconds per step in each phase (exclusive: a phase's time leaves out the phases it calls),
the device's busy milliseconds per step, the share of wall time the host spends waiting for the
device's tokens, and the share the device sits idle. Only the timed run counts
(the bench's --warmup requests are left out). The timers cost about a microsecond per call,
which the grammar advance (one call per constrained row) feels most.

On a GPU the idle share is measured on the device's own clock: for each step, the time between
the previous step's last event and this step's first (the host was late to queue it) plus the
time between its forward and its sampling, against the device's time from the previous step's
end to this one's. A step is queued while the one before still runs, so its host wall time
waits for the previous step, not its own: comparing the two misattributes a long step's time to
the step after it. On a CPU the forward runs inside the host's step, and idle is wall minus busy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: The host phases of a step, in the order a step meets them.
PHASES = ("schedule", "build_batch", "sampling_batch", "execute", "mask_fill", "sample",
          "wait", "process", "grammar_advance", "other")
#: Buckets of rows (sequences in the step's batch): (name, smallest, largest).
BUCKETS = (("0", 0, 0), ("1", 1, 1), ("2-63", 2, 63), ("64-255", 64, 255),
           ("256+", 256, 1 << 62))


@dataclass
class StepRecord:
    """One engine step: its rows, wall time, exclusive host time per phase, device timing."""

    rows: int = 0
    wall: float = 0.0
    phases: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # [forward start, forward end, sampling start, sampling end] CUDA events, None unrecorded.
    events: list[Any] = field(default_factory=lambda: [None] * 4)


class PhaseRecorder:
    """Wraps engine methods with exclusive timers and records one :class:`StepRecord` a step.

    All wrapped calls happen on the engine's thread, so one stack of open timers suffices.
    """

    def __init__(self, trace: str | None = None, trace_start: int = 200, trace_steps: int = 20):
        self.cuda = False  # whether the engine runs on a CUDA device: set as it is built
        self.records: list[StepRecord] = []
        self.recording = False
        self.result: dict | None = None
        self._current: StepRecord | None = None
        self._stack: list[list[float]] = []
        self._trace = (trace, trace_start, trace_steps) if trace else None
        self._profiler: Any = None
        self._originals: list[tuple[Any, str, Any]] = []

    # ------------------------------------------------------------------ wrapping

    def install(self) -> None:
        """Wrap the engine's classes; engines built afterwards are measured."""
        from lmforge.bench import throughput
        from lmforge.engine import llm_engine
        from lmforge.engine.output_processor import OutputProcessor
        from lmforge.engine.sampler import Sampler, SamplerOutput
        from lmforge.engine.sampling_batch import SamplingBatch
        from lmforge.engine.sampling_slots import SlotSampling
        from lmforge.engine.scheduler import Scheduler
        from lmforge.structured import masks
        from lmforge.structured.compiler import GrammarState

        self.wrap(Scheduler, "schedule", "schedule", after=self._count_rows)
        self.wrap(Scheduler, "build_batch", "build_batch")
        self.wrap(SlotSampling, "batch", "sampling_batch")
        self.wrap(SamplingBatch, "from_sequences", "sampling_batch")  # the row-by-row fallback
        self.wrap(masks, "fill_bitmask", "mask_fill", after=lambda _: self._event(2))
        self.wrap(Sampler, "sample", "sample", before=lambda: self._event(2),
                  after=lambda _: self._event(3))
        self.wrap(SamplerOutput, "host_token_ids", "wait")
        self.wrap(OutputProcessor, "process", "process")
        self.wrap(GrammarState, "accept", "grammar_advance")
        engine_init = llm_engine.LLMEngine.__init__

        def init(engine, *args, **kwargs):
            engine_init(engine, *args, **kwargs)
            self.cuda = torch.device(engine.runner.device).type == "cuda"
            self.wrap(engine.runner, "execute", "execute", before=lambda: self._event(0),
                      after=lambda _: self._event(1))

        self._replace(llm_engine.LLMEngine, "__init__", init)
        self._wrap_step(llm_engine.LLMEngine)
        run_bench = throughput.profile_throughput

        def profile_throughput(*args, **kwargs):
            # Each call (the warm-up, then the timed run) starts the records afresh.
            self.records.clear()
            self.recording = True
            try:
                self.result = run_bench(*args, **kwargs)
            finally:
                self.recording = False
            return self.result

        self._replace(throughput, "profile_throughput", profile_throughput)

    def uninstall(self) -> None:
        """Put back what :meth:`install` replaced."""
        while self._originals:
            owner, name, raw = self._originals.pop()
            setattr(owner, name, raw)

    def _replace(self, owner: Any, name: str, new: Any) -> None:
        if isinstance(owner, type | types.ModuleType):  # not an instance: outlives this run
            self._originals.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, new)

    def wrap(self, owner: Any, name: str, phase: str, before=None, after=None) -> None:
        """Replace ``owner.name`` (a function, method or classmethod) by a timed one."""
        raw = owner.__dict__.get(name) if hasattr(owner, "__dict__") else None
        is_classmethod = isinstance(raw, classmethod)
        fn = raw.__func__ if is_classmethod else getattr(owner, name)

        def timed(*args, **kwargs):
            if self._current is None:
                return fn(*args, **kwargs)
            if before is not None:
                before()
            frame = [0.0]
            self._stack.append(frame)
            start = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self._stack.pop()
                self._current.phases[phase] += elapsed - frame[0]
                self._stack[-1][0] += elapsed
            if after is not None:
                after(result)
            return result

        self._replace(owner, name, classmethod(timed) if is_classmethod else timed)

    def _wrap_step(self, engine_class: Any) -> None:
        step = engine_class.step

        def timed_step(engine):
            if not self.recording:
                return step(engine)
            record = self._current = StepRecord()
            root = [0.0]
            self._stack = [root]
            self._trace_step(len(self.records))
            start = time.perf_counter()
            try:
                return step(engine)
            finally:
                record.wall = time.perf_counter() - start
                record.phases["other"] += record.wall - root[0]
                self._current = None
                self.records.append(record)

        self._replace(engine_class, "step", timed_step)

    def _count_rows(self, output) -> None:
        self._current.rows = len(output.seqs)

    def _event(self, index: int) -> None:
        """Record CUDA event ``index`` of the current step (again, if it was: the sampling's
        start moves past the mask fill, which is host work)."""
        if not self.cuda:
            return
        events = self._current.events
        if events[index] is None:
            events[index] = torch.cuda.Event(enable_timing=True)
        events[index].record()

    def _trace_step(self, index: int) -> None:
        if self._trace is None:
            return
        path, first, count = self._trace
        if index == first:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.cuda:
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self._profiler = torch.profiler.profile(activities=activities)
            self._profiler.start()
        elif index == first + count and self._profiler is not None:
            self.stop_trace()

    def stop_trace(self) -> None:
        """Stop a running trace and write it (chrome trace format)."""
        if self._profiler is None:
            return
        self._profiler.stop()
        self._profiler.export_chrome_trace(self._trace[0])
        print(f"Trace of {self._trace[2]} steps written to {self._trace[0]}", file=sys.stderr)
        self._profiler = None

    # ------------------------------------------------------------------ figures

    def device_seconds(self, record: StepRecord) -> float:
        """The device's busy time in a step: its forward and its sampling."""
        if not self.cuda:
            return record.phases["execute"] + record.phases["sample"]
        ev = record.events
        busy = 0.0
        for start, end in ((ev[0], ev[1]), (ev[2], ev[3])):
            if start is not None and end is not None:
                busy += start.elapsed_time(end) / 1e3
        return busy

    def device_gaps(self) -> list[float | None]:
        """Per record, the seconds the device sat idle before and inside its step: from the
        previous step's last event to this step's forward, plus from its forward's end to its
        sampling's start. None for a step without a forward, or the first one."""
        gaps: list[float | None] = []
        last = None  # the previous step's last recorded event
        for record in self.records:
            ev = record.events
            gap = None
            if ev[0] is not None and last is not None:
                gap = last.elapsed_time(ev[0]) / 1e3
                if ev[1] is not None and ev[2] is not None:
                    gap += ev[1].elapsed_time(ev[2]) / 1e3
            gaps.append(gap)
            last = next((e for e in reversed(ev) if e is not None), last)
        return gaps

    def summary(self) -> dict[str, dict[str, float]]:
        """Per bucket (and ``all``): steps, ms per step of wall, each phase and the device,
        and the shares of wall time the host waits and the device idles."""
        gaps: list[float | None] = [None] * len(self.records)
        if self.cuda:
            torch.cuda.synchronize()
            gaps = self.device_gaps()
        pairs = list(zip(self.records, gaps, strict=True))
        groups: dict[str, list] = {"all": pairs}
        for name, low, high in BUCKETS:
            chosen = [(r, g) for r, g in pairs if low <= r.rows <= high]
            if chosen:
                groups[name] = chosen
        return {name: self._figures(chosen) for name, chosen in groups.items()}

    def _figures(self, pairs: list) -> dict[str, float]:
        records = [r for r, _ in pairs]
        steps = len(records)
        if not steps:
            return {"steps": 0}
        wall = sum(r.wall for r in records)
        device = sum(self.device_seconds(r) for r in records)
        out = {"steps": steps, "rows_mean": sum(r.rows for r in records) / steps,
               "wall_ms": wall / steps * 1e3}
        for phase in PHASES:
            out[f"{phase}_ms"] = sum(r.phases.get(phase, 0.0) for r in records) / steps * 1e3
        out["device_ms"] = device / steps * 1e3
        out["host_waits"] = out["wait_ms"] / out["wall_ms"] if wall else 0.0
        if self.cuda:
            measured = [(self.device_seconds(r), g) for r, g in pairs if g is not None]
            idle = sum(g for _, g in measured)
            span = idle + sum(busy for busy, _ in measured)
            out["device_idle"] = idle / span if span else 0.0
        else:
            out["device_idle"] = max(0.0, wall - device) / wall if wall else 0.0
        return out


SHORT = {"schedule": "sched", "build_batch": "build", "sampling_batch": "sbatch",
         "execute": "exec", "mask_fill": "mask", "sample": "sample", "wait": "wait",
         "process": "process", "grammar_advance": "grammar", "other": "other"}


def format_table(summary: dict[str, dict[str, float]]) -> str:
    """The summary as a fixed-width table: ms per step, and the two shares in percent."""
    head = (f"{'rows':>7} {'steps':>6} {'wall':>7} | "
            + " ".join(f"{SHORT[p]:>7}" for p in PHASES)
            + f" | {'device':>7} {'wait%':>6} {'idle%':>6}")
    lines = [head, "-" * len(head)]
    order = [name for name, _, _ in BUCKETS] + ["all"]
    for name in order:
        f = summary.get(name)
        if not f or not f["steps"]:
            continue
        lines.append(f"{name:>7} {f['steps']:>6} {f['wall_ms']:>7.2f} | "
                     + " ".join(f"{f[p + '_ms']:>7.2f}" for p in PHASES)
                     + f" | {f['device_ms']:>7.2f} {f['host_waits'] * 100:>6.1f}"
                     f" {f['device_idle'] * 100:>6.1f}")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Every other argument goes to `lmforge bench throughput` (see its --help); put "
        "them after --.")
    parser.add_argument("--json", metavar="FILE", help="Write the figures to this JSON file.")
    parser.add_argument("--trace", metavar="FILE",
                        help="Write a torch.profiler trace (chrome format) of some steps.")
    parser.add_argument("--trace-start", type=int, default=200, metavar="N",
                        help="The timed run's step the trace starts at (default 200).")
    parser.add_argument("--trace-steps", type=int, default=20, metavar="N",
                        help="Steps the trace covers (default 20).")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the bench under the recorder; returns what ``--json`` writes."""
    args, bench_args = parse_args(sys.argv[1:] if argv is None else argv)
    bench_args = [a for a in bench_args if a != "--"]
    recorder = PhaseRecorder(args.trace, args.trace_start, args.trace_steps)
    from lmforge.bench.results import device_name
    from lmforge.cli.app import create_app

    recorder.install()
    try:
        create_app()(args=["bench", "throughput", *bench_args], prog_name="lmforge bench")
    except SystemExit as exc:
        if exc.code:
            raise
    finally:
        recorder.stop_trace()
        recorder.uninstall()
    if recorder.result is None:
        raise SystemExit("The bench ran no workload; see its message above.")
    summary = recorder.summary()
    print(format_table(summary))
    report = {"device": device_name(), "bench_args": bench_args, "throughput": recorder.result,
              "phases": list(PHASES), "buckets": summary}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"Figures written to {args.json}")
    return report


if __name__ == "__main__":
    main()
