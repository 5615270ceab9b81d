"""How long ``lmforge chat`` takes to be ready, and how much memory it holds, as a user runs it.

Each run starts ``lmforge --log-level info chat [ARGS]`` on a pseudo-terminal, times it until
the ``user>`` prompt shows (ready), sends one message and times the reply (first reply), then
quits with Ctrl-D and reads the process's peak resident memory and CPU time from the kernel
(the CPU time hardly depends on what else the machine runs). The first run only warms the page
cache (the model file, the libraries) unless ``--cold`` is given; the figures are the medians of
the timed runs, and the best run's times (on a machine that others share, the best is the
closest to an idle one). The KV pool's size comes from the engine's log.

    python scripts/measure_startup.py [--runs 3] [--json out.json] [-- CHAT ARGS...]

e.g. ``-- --cache-max-entry-count 128`` for a pool of 128 blocks (one 8192-token session).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import select
import statistics
import subprocess
import sys
import time

PROMPT = re.compile(rb"user>")
# the engine's start-up line: "K/V cache: 8,192 tokens in 128 blocks of 64, 0.35 GiB, ..."
KV_POOL = re.compile(rb"K/V cache: [\d,]+ tokens in [\d,]+ blocks of \d+, ([\d.]+) (MiB|GiB)")
TIMEOUT_S = 600.0


def _read_until(fd: int, pattern: re.Pattern, seen: bytearray, start: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not pattern.search(seen, start):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {pattern.pattern!r} after {TIMEOUT_S:.0f} s:\n"
                               f"{seen.decode(errors='replace')[-2000:]}")
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                raise RuntimeError(seen.decode(errors="replace")[-2000:]) from None
            seen += chunk


def one_run(chat_args: list[str]) -> dict:
    """Start the chat on a pseudo-terminal and measure it once."""
    import pty

    load = os.getloadavg()[0]
    main, child_end = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmforge.cli.main", "--log-level", "info", "chat", *chat_args],
        stdin=child_end, stdout=child_end, stderr=child_end, env=env, start_new_session=True)
    os.close(child_end)
    seen = bytearray()
    try:
        _read_until(main, PROMPT, seen, 0)
        ready = time.perf_counter() - start
        mark = len(seen)
        sent = time.perf_counter()
        os.write(main, b"Say hello in five words.\r")
        _read_until(main, PROMPT, seen, mark)
        first_reply = time.perf_counter() - sent
        os.write(main, b"\x04")  # Ctrl-D
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    pool = KV_POOL.search(seen)
    kv_mib = float(pool.group(1)) * (1024 if pool.group(2) == b"GiB" else 1) if pool else None
    return {"ready_s": ready, "first_reply_s": first_reply, "load_average": load,
            "peak_rss_mib": usage.ru_maxrss / 1024, "kv_pool_mib": kv_mib,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "exit_status": os.waitstatus_to_exitcode(status)}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    load = os.getloadavg()[0]
    cpus = os.cpu_count()
    model = next((line.split(":", 1)[1].strip() for line in
                  open("/proc/cpuinfo", encoding="utf-8") if line.startswith("model name")),
                 platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    return f"{model}, {cpus} cores, load average {load:.1f} at start"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument("--cold", action="store_true", help="time the first run too")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("chat_args", nargs="*", help="arguments for lmforge chat, after --")
    args = parser.parse_args()

    if not args.cold:
        one_run(args.chat_args)  # warms the page cache
    runs = [one_run(args.chat_args) for _ in range(args.runs)]
    summary = {key: statistics.median(r[key] for r in runs)
               for key in ("ready_s", "first_reply_s", "peak_rss_mib", "cpu_s")}
    summary["kv_pool_mib"] = runs[0]["kv_pool_mib"]
    best = {key: min(r[key] for r in runs) for key in ("ready_s", "first_reply_s")}
    report = {"commit": _commit(), "machine": machine(), "chat_args": args.chat_args,
              "runs": runs, "median": summary, "best": best}
    print(f"commit {report['commit']}; {report['machine']}")
    print(f"lmforge chat {' '.join(args.chat_args)}".rstrip())
    for i, r in enumerate(runs, 1):
        print(f"  run {i}: ready {r['ready_s']:.1f} s, first reply {r['first_reply_s']:.1f} s, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB, CPU {r['cpu_s']:.1f} s "
              f"(load average {r['load_average']:.1f})")
    kv = f"{summary['kv_pool_mib']:.0f} MiB" if summary["kv_pool_mib"] is not None else "unknown"
    print(f"median: ready {summary['ready_s']:.1f} s, first reply {summary['first_reply_s']:.1f} s, "
          f"peak RSS {summary['peak_rss_mib']:.0f} MiB, of which KV pool {kv}; "
          f"CPU time {summary['cpu_s']:.1f} s")
    print(f"best: ready {best['ready_s']:.1f} s, first reply {best['first_reply_s']:.1f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
