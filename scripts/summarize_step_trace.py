"""Summarize engine step traces (``LMFORGE_STEP_TRACE``, see ``lmforge.engine.step_trace``).

A trace is split into runs at idle gaps (no request arriving and no step for ``--gap`` seconds:
a server's warm-up is its own run). Per run: requests and how long after the run's first request
the last one reached the engine; steps, split by whether requests were left waiting after them,
with mean rows, running sequences and step time of each kind; and the engine's time between
steps (applying commands, sending outputs). Two traces of the same requests, one offline and
one through a server, then show where the server loses: requests arriving late (a long arrival
span, few steps with a queue), a batch not refilled (fewer rows with a queue), or slower steps.

  LMFORGE_STEP_TRACE=offline.jsonl lmforge bench throughput MODEL --max-batch-size 256 ...
  LMFORGE_STEP_TRACE=server.jsonl lmforge serve api_server MODEL --max-batch-size 256 &
  lmforge bench serve http://127.0.0.1:23333 ...
  python scripts/summarize_step_trace.py offline.jsonl server.jsonl [--gap 1.0] [--min-requests 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import fmean


def read_trace(path: str | Path) -> list[list]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip()]


def split_runs(events: list[list], gap: float) -> list[list[list]]:
    """Events grouped into runs separated by ``gap`` seconds without an event. A step's idle
    start counts: a step line is stamped at its end, so its start is ``t - dt``."""
    runs: list[list[list]] = []
    last = None
    for event in events:
        start = event[1] - event[2] if event[0] == "step" else event[1]
        if last is None or start - last > gap:
            runs.append([])
        runs[-1].append(event)
        last = event[1]
    return runs


def summarize_run(events: list[list]) -> dict:
    adds = [e for e in events if e[0] == "add"]
    steps = [e for e in events if e[0] == "step"]
    t0 = min(e[1] - e[2] if e[0] == "step" else e[1] for e in events)
    queued = [s for s in steps if s[6] > 0]
    drained = [s for s in steps if s[6] == 0]
    between = [b[1] - b[2] - a[1] for a, b in zip(steps, steps[1:], strict=False)]

    def means(group: list[list]) -> dict:
        return dict(steps=len(group),
                    rows=fmean(s[3] for s in group) if group else 0.0,
                    running=fmean(s[5] for s in group) if group else 0.0,
                    step_ms=1000 * fmean(s[2] for s in group) if group else 0.0)

    return dict(
        requests=len(adds),
        arrival_span_s=(adds[-1][1] - adds[0][1]) if adds else 0.0,
        elapsed_s=(steps[-1][1] - t0) if steps else 0.0,
        prompt_tokens=sum(s[4] for s in steps),
        queued=means(queued),
        drained=means(drained),
        between_ms=1000 * fmean(between) if between else 0.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", nargs="+")
    parser.add_argument("--gap", type=float, default=1.0)
    parser.add_argument("--min-requests", type=int, default=2,
                        help="Leave out runs with fewer requests (health checks).")
    args = parser.parse_args()
    print("trace | run | requests | arrived within (s) | elapsed (s) | with a queue: steps, rows, "
          "running, ms | drained: steps, rows, ms | between steps (ms)")
    for path in args.traces:
        for i, run in enumerate(split_runs(read_trace(path), args.gap)):
            r = summarize_run(run)
            if r["requests"] < args.min_requests:
                continue
            q, d = r["queued"], r["drained"]
            print(f"{path} | {i} | {r['requests']} | {r['arrival_span_s']:.2f} | "
                  f"{r['elapsed_s']:.2f} | {q['steps']}, {q['rows']:.1f}, {q['running']:.1f}, "
                  f"{q['step_ms']:.2f} | {d['steps']}, {d['rows']:.1f}, {d['step_ms']:.2f} | "
                  f"{r['between_ms']:.2f}")


if __name__ == "__main__":
    main()
