"""What an engine start spends on imports: fresh processes timed stage by stage, and which
packages the time goes to.

Each stage runs in a fresh interpreter ``--runs`` times after one warm-up run (the page cache
then holds the libraries) and reports the median wall time; a stage's cost is its time minus the
previous stage's. The stages are cumulative:

- ``python``: an empty interpreter;
- ``torch``: ``import torch``, which every engine needs;
- ``import``: ``from lmforge import TurbomindEngineConfig, pipeline``, as ``pipeline()`` users
  and ``scripts/bench_prefill_ready.py`` start;
- ``plugins``: plugin discovery and loading, and the ``turbomind`` engine's lookup;
- ``tokenizer``: the demo model's tokenizer, as ``pipeline()`` loads it before the weights.

Then one ``python -X importtime`` run of the last stage is summed per top-level package (self
times), to show where the time goes.

    python scripts/measure_imports.py [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import subprocess
import sys
import time

STAGES = {
    "python": "pass",
    "torch": "import torch",
    "import": "import torch; from lmforge import TurbomindEngineConfig, pipeline",
    "plugins": "import torch; from lmforge import TurbomindEngineConfig, pipeline\n"
               "from lmforge import registry\n"
               "registry.engines(); registry.models(); registry.get_engine('turbomind')",
    "tokenizer": "import torch; from lmforge import TurbomindEngineConfig, pipeline\n"
                 "from lmforge import registry\n"
                 "registry.engines(); registry.models(); registry.get_engine('turbomind')\n"
                 "from lmforge.demo import demo_model_path\n"
                 "from lmforge.engine.builder import _load_tokenizer\n"
                 "from lmforge.model.loader import load_model_info\n"
                 "_load_tokenizer(load_model_info(demo_model_path()))",
}
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)$", re.MULTILINE)


def wall_s(code: str, runs: int) -> list[float]:
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def self_ms_by_package(code: str) -> dict[str, float]:
    """``-X importtime``'s self times summed per top-level package, in ms, largest first."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code], check=True,
                          capture_output=True, text=True)
    totals: dict[str, float] = collections.Counter()
    for micros, module in IMPORT_LINE.findall(done.stderr):
        totals[module.split(".")[0]] += int(micros) / 1e3
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def main() -> None:
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from measure_startup import _commit, machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per stage (default 5)")
    parser.add_argument("--top", type=int, default=12, help="packages to list (default 12)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    report = {"commit": _commit(), "machine": machine(), "runs": args.runs, "stages": {}}
    print(f"commit {report['commit']}; {report['machine']}")
    previous = 0.0
    for name, code in STAGES.items():
        times = wall_s(code, args.runs)
        median = statistics.median(times)
        report["stages"][name] = {"median_s": median, "min_s": min(times), "times_s": times}
        print(f"  {name:<10} {median:6.3f} s (+{median - previous:.3f}; min {min(times):.3f})")
        previous = median
    packages = self_ms_by_package(STAGES["tokenizer"])
    report["self_ms_by_package"] = packages
    print(f"import self time, {sum(packages.values()):.0f} ms in all, by package:")
    for package, ms in list(packages.items())[:args.top]:
        print(f"  {ms:7.1f} ms {package}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
