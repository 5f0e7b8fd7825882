#!/usr/bin/env python
"""``celery-probe worker-check`` beside ``celery inspect ping -d celery@HOST``, as exec probes.

Run it as ``python bench/bench_worker_check.py [--repeat N]`` with the Python of the
virtualenv that has celery-probe. It starts a private redis-server on a free port and one
prefork worker of ``bench/health_app.py`` (``bench_app`` plus ``celery_probe.worker.install``)
with ``--probe-dir``, then times, round-robin so background noise hits them alike, each
command as a fresh process, as a Kubernetes exec probe starts it:

- ``celery -A health_app inspect ping -d NAME`` (what operators use as a liveness probe today:
  it imports the app and Celery and asks the worker over the broker);
- ``celery-probe worker-check DIR --liveness`` and ``--readiness`` (read one file, no broker);
- ``python -m celery_probe worker-check DIR --liveness`` (no console-script wrapper, which imports ``re``);
- the floor ``python -c pass`` (an interpreter that does nothing).

Wall time is measured around each process, CPU as the ``RUSAGE_CHILDREN`` user + system delta
across its wait. It prints medians and the ratios to inspect ping; the goal is at most 1/20 of
its wall time and CPU. Exit codes: 0 done (a missed goal prints MISSED); 1 a check did not pass
against the healthy worker; 2 redis-server or a console script is missing.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from celery_probe.testing import CeleryWorker, RedisServer, wait_until

BENCH = Path(__file__).resolve().parent
GOAL = 1 / 20


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + system of the child) and exit code of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, cwd=BENCH, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=60, check=False)
    if proc.returncode and "worker-check" in command:
        print(f"exit {proc.returncode}: {proc.stderr.decode(errors='replace').strip()}", file=sys.stderr)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per command (default 15)")
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    celery, probe = shutil.which("celery", path=str(bindir)), shutil.which("celery-probe", path=str(bindir))
    if not RedisServer.available() or not celery or not probe:
        print("needs redis-server and the celery and celery-probe console scripts beside this Python",
              file=sys.stderr)
        return 2
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(BENCH.parent / "src")], check=False)
    folder = Path(tempfile.mkdtemp(prefix="celery-probe-bench-health-"))
    with RedisServer() as redis:
        env = {**os.environ, "BENCH_BROKER": redis.url(0), "BENCH_BACKEND": redis.url(1),
               "PYTHONPATH": str(BENCH)}
        worker = CeleryWorker("health_app", name="health@%h", pool="prefork", concurrency=2, env=env,
                              pythonpath=[BENCH], cwd=BENCH, extra=("--probe-dir", str(folder)))
        try:
            worker.start(timeout=60)
            ready = [probe, "worker-check", str(folder), "--readiness"]
            wait_until(lambda: timed(ready, env)[2] == 0, timeout=30, what="the worker ready by its own files")
            commands = {
                "celery inspect ping -d": [celery, "-A", "health_app", "inspect", "ping", "-d", worker.name],
                "worker-check --liveness": [probe, "worker-check", str(folder), "--liveness"],
                "worker-check --readiness": [probe, "worker-check", str(folder), "--readiness"],
                "python -m celery_probe wc": [sys.executable, "-m", "celery_probe", "worker-check", str(folder),
                                              "--liveness"],
                "python -c pass (floor)": [sys.executable, "-c", "pass"],
            }
            for command in commands.values():  # warm the page cache and bytecode once
                timed(command, env)
            figures: dict[str, list[tuple[float, float, int]]] = {name: [] for name in commands}
            for _ in range(args.repeat):
                for name, command in commands.items():
                    figures[name].append(timed(command, env))
        finally:
            worker.close()
    shutil.rmtree(folder, ignore_errors=True)
    return report(figures, args.repeat)


def report(figures: dict[str, list[tuple[float, float, int]]], repeat: int) -> int:
    medians = {name: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
               for name, runs in figures.items()}
    peer_wall, peer_cpu = medians["celery inspect ping -d"]
    print(f"{platform.node() or socket.gethostname()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"load {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {repeat} runs each, medians")
    print(f"{'command':<28} {'wall s':>8} {'CPU s':>8} {'wall ×ping':>11} {'CPU ×ping':>10}  exit codes")
    failed = 0
    for name, (wall, cpu) in medians.items():
        codes = sorted({r[2] for r in figures[name]})
        print(f"{name:<28} {wall:8.4f} {cpu:8.4f} {wall / peer_wall:11.3f} {cpu / peer_cpu:10.3f}  {codes}")
        if name.startswith(("worker-check", "python -m")) and codes != [0]:
            failed = 1
    for name in ("worker-check --liveness", "worker-check --readiness"):
        wall, cpu = medians[name]
        met = wall <= GOAL * peer_wall and cpu <= GOAL * peer_cpu
        print(f"goal {name} <= 1/20 of inspect ping (wall and CPU): "
              f"{'met' if met else 'MISSED'} (1/{peer_wall / wall:.0f} wall, 1/{peer_cpu / max(cpu, 1e-6):.0f} CPU)")
    return failed


if __name__ == "__main__":
    sys.exit(main())
