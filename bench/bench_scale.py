#!/usr/bin/env python
"""Scale benchmark: 1,000 watched queues and 20 workers, on a private redis-server.

``python bench/bench_scale.py [--queues 1000] [--workers 20] [--repeat 3]`` prints:

* the wall time of ``celery-probe run`` watching N queues, each holding messages at four
  priority levels (so 4·N Redis lists), and the Redis commands it issued, read from
  ``INFO commandstats`` before and after (the one worker's own polling is measured
  separately over the same time and subtracted);
* the wall time of ``celery-probe run --expect-workers 20`` against 20 real solo workers,
  beside ``celery inspect ping`` on the same workers.

Everything it starts is stopped on the way out; every wait is bounded.
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
from pathlib import Path
from typing import Any

from celery_probe.testing import CeleryWorker, RedisServer

BENCH_DIR = Path(__file__).resolve().parent
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def commands(redis: RedisServer) -> dict[str, int]:
    with redis.client() as client:
        return {name: int(v["calls"]) for name, v in client.info("commandstats").items()}


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


def timed(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[float, int, dict[str, Any]]:
    started = time.monotonic()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - started
    try:
        verdict = json.loads(proc.stdout)
    except ValueError:
        verdict = {}
    return elapsed, proc.returncode, verdict


def fill(redis: RedisServer, queues: list[str]) -> None:
    message = json.dumps({"headers": {"task": "bench.noop"}, "properties": {}, "body": ""})
    with redis.client() as client:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            for suffix in PRIORITY_SUFFIXES:
                pipe.lpush(queue + suffix, message)
        pipe.execute()


def env_for(redis: RedisServer, report_dir: str) -> dict[str, str]:
    return {**os.environ, "BENCH_BROKER": redis.url(0), "BENCH_BACKEND": redis.url(1),
            "PYTHONPATH": str(BENCH_DIR), "CELERY_PROBE_REPORT_DIR": report_dir}


def bench_queues(count: int, repeat: int) -> list[str]:
    queues = [f"q{i}" for i in range(count)]
    rows = []
    with RedisServer() as redis, tempfile.TemporaryDirectory() as reports:
        env = env_for(redis, reports)
        fill(redis, queues)
        with CeleryWorker("bench_app", name="scale@%h", env=env, pythonpath=[BENCH_DIR], queues=["celery"]):
            probe = [sys.executable, "-m", "celery_probe", "run", "-A", "bench_app", "--format", "json",
                     "-Q", ",".join(["celery", *queues])]
            times, used = [], {}
            for _ in range(repeat):
                idle_before = commands(redis)
                time.sleep(0.5)
                idle = sum(delta(idle_before, commands(redis)).values()) * 2  # worker's own, per second
                before = commands(redis)
                elapsed, code, verdict = timed(probe, env)
                used = delta(before, commands(redis))
                used_total = sum(used.values()) - int(idle * elapsed)
                times.append(elapsed)
            top = sorted(used.items(), key=lambda kv: -kv[1])[:5]
            detail = ", ".join(f"{name.removeprefix('cmdstat_')}={calls}" for name, calls in top)
            rows.append(f"| {count} queues x 4 priority lists | celery-probe run | {statistics.median(times):.2f} s "
                        f"| exit {code}, queue_length {verdict.get('queue_length')} "
                        f"| ~{used_total} Redis commands ({detail}) |")
    return rows


def bench_workers(count: int, repeat: int) -> list[str]:
    rows = []
    with RedisServer() as redis, tempfile.TemporaryDirectory() as reports:
        env = env_for(redis, reports)
        workers = [CeleryWorker("bench_app", name=f"w{i}@%h", env=env, pythonpath=[BENCH_DIR]) for i in range(count)]
        try:
            for worker in workers:
                worker.start(timeout=60)
            cases = {
                f"celery-probe run --expect-workers {count}": [
                    sys.executable, "-m", "celery_probe", "run", "-A", "bench_app", "--format", "json",
                    "--expect-workers", str(count)],
                "celery inspect ping": [sys.executable, "-m", "celery", "-A", "bench_app", "inspect", "ping"],
            }
            for label, args in cases.items():
                runs = [timed(args, env) for _ in range(repeat)]
                median = statistics.median(r[0] for r in runs)
                answered = len(runs[-1][2].get("workers", {})) if runs[-1][2] else "-"
                rows.append(f"| {count} workers | {label} | {median:.2f} s | exit {runs[-1][1]}, "
                            f"{answered} answered |  |")
        finally:
            for worker in workers:
                worker.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print("| case | tool | median wall | result | notes |")
    print("|---|---|---|---|---|")
    for row in bench_queues(args.queues, args.repeat) + bench_workers(args.workers, args.repeat):
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
