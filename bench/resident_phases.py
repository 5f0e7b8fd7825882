#!/usr/bin/env python
"""Where the CPU of one forked probe run goes: ``python bench/resident_phases.py [--runs 5]``.

It starts a private redis-server and a solo worker of ``bench/bench_app.py``, does the resident
runner's imports (:func:`celery_probe.run.resident.preload`, then ``gc.freeze()``), and forks
``--runs`` healthy probe runs from this process the way the runner does, each running
``celery_probe``'s ``__main__`` with ``run --format json``. Inside each run,
``time.process_time()`` is read at pytest's hooks (a plugin added to the run's ``pytest.main``
call; instrumentation of this script only) and the CPU of each part is printed, as the median
over the runs, beside the run's whole CPU from the kernel (the reaped child's utime + stime),
its system time and its minor page faults (``ru_minflt``: pages copied or mapped in).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

try:
    from celery_probe.run.resident import preload
    from celery_probe.testing import CeleryWorker, RedisServer
except ImportError:  # pragma: no cover - wrong interpreter
    sys.exit("resident_phases.py: run it with the Python that has celery_probe installed")

BENCH_DIR = Path(__file__).resolve().parent
PARTS = (("main", "__main__, click, settings, the app import"), ("configure", "pytest configuration"),
         ("collected", "collection and fixtures"), ("finish", "the probes, to session finish"),
         ("exit", "report files and exit"))


def forked_run(report_dir: str, out: Path) -> None:
    """In the forked child: one probe run with hook timestamps; never returns."""
    import runpy

    import pytest

    marks: dict[str, float] = {}

    class Marks:
        def pytest_configure(self) -> None:
            marks["configure"] = time.process_time()

        def pytest_collection_finish(self) -> None:
            marks["collected"] = time.process_time()

        def pytest_sessionfinish(self) -> None:
            marks["finish"] = time.process_time()

    real_main = pytest.main

    def main_with_marks(args: list[str], plugins: list[object] = ()) -> object:  # type: ignore[assignment]
        marks["main"] = time.process_time()
        return real_main(args, plugins=[*plugins, Marks()])

    pytest.main = main_with_marks  # type: ignore[assignment]
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    start = time.process_time()
    sys.argv = ["-m", "run", "--format", "json", "--no-on-down", "--report-dir", report_dir]
    try:
        runpy.run_module("celery_probe", run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    marks["exit"] = time.process_time()
    out.write_text(json.dumps({name: value - start for name, value in marks.items()}))
    os._exit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    parts: dict[str, list[float]] = {name: [] for name, _label in PARTS}
    totals: list[float] = []
    system: list[float] = []
    faults: list[int] = []
    with RedisServer() as redis, tempfile.TemporaryDirectory(prefix="celery-probe-phases-") as folder:
        env = {"BENCH_BROKER": redis.url(0), "BENCH_BACKEND": redis.url(1)}
        with CeleryWorker("bench_app", name="phases@%h", env={**os.environ, **env}, pythonpath=[BENCH_DIR]):
            os.environ.update(env, CELERY_PROBE_APP="bench_app", CELERY_PROBE_EXPECT_WORKERS="1",
                              CELERY_PROBE_DEADLINE="2")
            sys.path.insert(0, str(BENCH_DIR))
            gc.disable()
            preload()
            gc.freeze()
            gc.enable()
            for number in range(args.runs + 1):  # the first is a warm-up (bytecode, page cache)
                out = Path(folder) / f"marks-{number}.json"
                before, faults_before = os.times(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
                pid = os.fork()
                if pid == 0:
                    forked_run(folder, out)
                os.waitpid(pid, 0)
                after, faults_after = os.times(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
                if number == 0:
                    continue
                system.append(after.children_system - before.children_system)
                faults.append(faults_after - faults_before)
                totals.append(after.children_user + after.children_system
                              - before.children_user - before.children_system)
                marks = json.loads(out.read_text())
                previous = 0.0
                for name, _label in PARTS:
                    parts[name].append(marks[name] - previous)
                    previous = marks[name]
    print(f"{args.runs} forked healthy runs, median CPU per part (time.process_time in the run):")
    for name, label in PARTS:
        print(f"  {label:45s} {statistics.median(parts[name]) * 1000:6.0f} ms")
    print(f"  {'the whole run (kernel: utime + stime)':45s} {statistics.median(totals) * 1000:6.0f} ms")
    print(f"  {'of which in the kernel (stime)':45s} {statistics.median(system) * 1000:6.0f} ms")
    print(f"  {'minor page faults (copy-on-write included)':45s} {statistics.median(faults):6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
