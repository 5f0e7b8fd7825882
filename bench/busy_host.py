#!/usr/bin/env python
"""A busy host: ``celery-probe run`` beside CPU-bound processes, healthy and with a frozen broker.

Run it as ``python bench/busy_host.py [--hogs 10] [--runs 20] [--deadline 5]`` with the Python
that has celery-probe installed. It starts a private ``redis-server`` on a free loopback port,
one prefork worker of ``bench/bench_app.py`` and ``--hogs`` CPU-bound processes (what a host
looks like whose prefork workers run CPU-bound tasks), then runs ``celery-probe run`` as its
own process, as cron would, ``--runs`` times in a row against the healthy worker, and
``--frozen-runs`` times with the broker frozen (SIGSTOP). It does the frozen runs once more
with no hogs, for the quiet figure.

It prints, per phase, the statuses counted, every reason code seen and the wall times, and
exits 1 when a healthy run said ``down`` or a frozen broker did not give ``down`` on the
quiet host: a probe that was not given a fair chance is no evidence against the broker.
Every process it starts is stopped on the way out; every wait is bounded, and each hog
ends by itself after ``--hog-seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests.support's fault tools
try:
    from tests.support.faults import cpu_hogs

    from celery_probe.testing import CeleryWorker, RedisServer
except ImportError:  # pragma: no cover - wrong interpreter
    sys.exit("busy_host.py: celery_probe is not importable; run it with the virtualenv's python")

BENCH_DIR = Path(__file__).resolve().parent
CAP = 30.0  # a probe process still running after this is killed and counted as a hang


def probe_once(env: dict[str, str], report_dir: Path, deadline: float) -> dict[str, Any]:
    """One ``celery-probe run`` as a fresh process, timed from spawn to exit."""
    command = [sys.executable, "-m", "celery_probe", "run", "-A", "bench_app", "--deadline", f"{deadline:g}",
               "--format", "json", "--report-dir", str(report_dir)]
    started = time.monotonic()
    try:
        done = subprocess.run(command, env=env, cwd=BENCH_DIR, capture_output=True, text=True, timeout=CAP)
    except subprocess.TimeoutExpired:
        return {"status": "hang", "codes": [], "wall": CAP, "load": os.getloadavg()[0]}
    wall = time.monotonic() - started
    try:
        verdict = json.loads(done.stdout)
    except ValueError:
        return {"status": f"exit {done.returncode}", "codes": [done.stderr.strip()[-120:]], "wall": wall,
                "load": os.getloadavg()[0]}
    codes = [r.get("code") for r in verdict.get("reasons", []) if r.get("severity") != "info"]
    return {"status": verdict.get("status"), "codes": codes, "wall": wall, "load": os.getloadavg()[0],
            "first": (verdict.get("reasons") or [{}])[0].get("message", "")}


def phase(name: str, runs: int, env: dict[str, str], report_dir: Path, deadline: float) -> dict[str, Any]:
    results = [probe_once(env, report_dir, deadline) for _ in range(runs)]
    statuses = Counter(r["status"] for r in results)
    codes = Counter(code for r in results for code in r["codes"])
    walls = [r["wall"] for r in results]
    row = {
        "phase": name, "runs": runs, "statuses": dict(statuses), "codes": dict(codes),
        "wall_median": statistics.median(walls), "wall_min": min(walls), "wall_max": max(walls),
        "load": statistics.mean(r["load"] for r in results),
        "examples": sorted({r.get("first", "")[:160] for r in results if r["status"] != "healthy"})[:4],
    }
    print(f"| {name} | {runs} | {', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))} | "
          f"{', '.join(f'{k} {v}' for k, v in sorted(codes.items())) or '-'} | "
          f"{row['wall_median']:.2f} ({row['wall_min']:.2f}-{row['wall_max']:.2f}) | {row['load']:.1f} |", flush=True)
    for example in row["examples"]:
        print(f"|   | | e.g. {example} | | | |", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hogs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--frozen-runs", type=int, default=3)
    parser.add_argument("--deadline", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    hog_seconds = (args.runs + 2 * args.frozen_runs + 4) * (args.deadline + 8)
    rows = []
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        env = {**os.environ, "BENCH_BROKER": redis.url(0), "BENCH_BACKEND": redis.url(1)}
        for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
            env.pop(name, None)
        worker = CeleryWorker("bench_app", pool="prefork", concurrency=2, env=env, pythonpath=[BENCH_DIR])
        stack.enter_context(worker)
        report_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="busy-host-")))
        print(f"celery-probe run --deadline {args.deadline:g} on {os.cpu_count()} cores, "
              f"{args.hogs} CPU-bound processes\n")
        print("| phase | runs | statuses | reason codes (not info) | wall s median (min-max) | load |")
        print("|---|---|---|---|---|---|")
        with cpu_hogs(args.hogs, hog_seconds, settle=1.0):
            rows.append(phase("healthy, busy", args.runs, env, report_dir, args.deadline))
            redis.freeze()
            try:
                rows.append(phase("broker frozen, busy", args.frozen_runs, env, report_dir, args.deadline))
            finally:
                redis.thaw()
        redis.freeze()
        try:
            rows.append(phase("broker frozen, quiet", args.frozen_runs, env, report_dir, args.deadline))
        finally:
            redis.thaw()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    problems = []
    if rows[0]["statuses"].get("down"):
        problems.append(f"{rows[0]['statuses']['down']} healthy runs on the busy host said down")
    if rows[2]["statuses"].get("down", 0) != args.frozen_runs:
        problems.append("a frozen broker on the quiet host did not always give down")
    for problem in problems:
        print(f"\nNOT OK: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
