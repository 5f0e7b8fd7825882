#!/usr/bin/env python
"""Load ``celery-probe serve``'s public health path and count the probe runs the load causes.

Run it as ``python bench/bench_serve.py [--duration 10] [--concurrency 4]`` with the Python
that has celery-probe installed with its ``serve`` extra. It starts its own redis-server on
a free loopback port, one solo-pool worker of ``bench/bench_app.py`` and ``celery-probe
serve`` as a separate process, then, from this process, over loopback HTTP with keep-alive:

* idle: no requests for DURATION seconds, to count the probe runs the timer alone starts;
* healthy: CONCURRENCY connections GET the health path for DURATION seconds;
* broker frozen: the same load while redis-server is stopped with SIGSTOP (it accepts TCP
  and never answers); SIGCONT afterwards.

For each phase it prints requests, requests/s, latency percentiles, errors, the statuses
served, and the probe runs started during the phase (``celery_probe_runs_total`` from
/metrics): every run does a fixed number of broker broadcasts, so runs per request is
broadcasts per request divided by that number. Every process it starts is stopped on the
way out, also on Ctrl-C or SIGTERM; every wait has a bound and the load a request cap.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from prometheus_client.parser import text_string_to_metric_families

    from celery_probe import __version__ as PROBE_VERSION
    from celery_probe.testing import CeleryWorker, RedisServer, free_port, wait_until
except ImportError:  # pragma: no cover - wrong interpreter or no serve extra
    sys.exit("bench_serve.py: needs celery_probe with its serve extra; run it with the virtualenv's python")

BENCH_DIR = Path(__file__).resolve().parent
HEALTH = "/api/interactions/health/celery"
REQUEST_TIMEOUT = 5.0  # a single request slower than this counts as an error
START_TIMEOUT = 30.0


@dataclass
class Phase:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: list[str] = field(default_factory=list)  # in order of first appearance
    runs: int = 0

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def runs_total(port: int) -> int:
    _status, body = get(port, "/metrics")
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "celery_probe_runs_total":
                return int(sample.value)
    raise RuntimeError("/metrics has no celery_probe_runs_total")


def load(port: int, phase: Phase, *, duration: float, concurrency: int, cap: int) -> None:
    """``concurrency`` keep-alive connections GET the health path until ``duration`` or ``cap``."""
    end = time.monotonic() + duration
    lock = threading.Lock()
    sent = [0]

    def client() -> None:
        latencies: list[float] = []
        statuses: list[str] = []
        errors = 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        while time.monotonic() < end:
            with lock:
                if sent[0] >= cap:
                    break
                sent[0] += 1
            started = time.perf_counter()
            try:
                conn.request("GET", HEALTH)
                response = conn.getresponse()
                body = response.read()
                latencies.append(time.perf_counter() - started)
                status = json.loads(body)["status"] if response.status == 200 else f"HTTP {response.status}"
                if not statuses or statuses[-1] != status:
                    statuses.append(status)
            except (OSError, http.client.HTTPException, ValueError):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        conn.close()
        with lock:
            phase.latencies.extend(latencies)
            phase.errors += errors
            for status in statuses:
                if status not in phase.statuses:
                    phase.statuses.append(status)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + REQUEST_TIMEOUT + 5)
    phase.seconds = time.monotonic() - started


def measured(port: int, phase: Phase, **kwargs: Any) -> Phase:
    before = runs_total(port)
    if kwargs.get("concurrency"):
        load(port, phase, **kwargs)
    else:  # idle: the timer alone
        started = time.monotonic()
        time.sleep(kwargs["duration"])  # measuring an idle period is the point here
        phase.seconds = time.monotonic() - started
    phase.runs = runs_total(port) - before
    return phase


def wait_status(port: int, status: str, timeout: float) -> None:
    wait_until(lambda: json.loads(get(port, HEALTH)[1])["status"] == status, timeout=timeout,
               interval=0.1, what=f"verdict {status}")


def table(phases: list[Phase], interval: float) -> str:
    head = ("phase", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "statuses served",
            "probe runs", "timer allows", "runs per request")
    rows = [head]
    for p in phases:
        n = len(p.latencies)
        low, high = math.floor(p.seconds / interval), math.ceil(p.seconds / interval)
        beyond = max(0, p.runs - high)  # runs the start-to-start timer cannot explain
        rows.append((
            p.name, str(n), f"{n / p.seconds:.0f}" if n else "-", _ms(p.percentile(0.5)), _ms(p.percentile(0.99)),
            _ms(max(p.latencies) if n else None), str(p.errors), " -> ".join(p.statuses) or "-",
            str(p.runs), f"{low}-{high}", f"{beyond / n:g}" if n else "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def machine() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    import starlette
    import uvicorn

    return (f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, celery-probe {PROBE_VERSION}, "
            f"uvicorn {uvicorn.__version__}, starlette {starlette.__version__}, load {os.getloadavg()[0]:.2f}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default 10)")
    parser.add_argument("--concurrency", type=int, default=4, help="keep-alive connections (default 4)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="request cap per phase")
    parser.add_argument("--interval", type=float, default=5.0, help="serve --interval (default 5)")
    parser.add_argument("--deadline", type=float, default=2.0, help="serve --deadline (default 2)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="celery-probe-bench-serve-"))
    serve: subprocess.Popen[bytes] | None = None
    log = workdir / "serve.log"
    with RedisServer() as redis:
        env = {**os.environ, "BENCH_BROKER": redis.url(0), "BENCH_BACKEND": redis.url(1),
               "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        with CeleryWorker("bench_app", name="bench-serve@%h", env=env, pythonpath=[BENCH_DIR]):
            port = free_port()
            try:
                with open(log, "wb") as out:
                    serve = subprocess.Popen(
                        [sys.executable, "-m", "celery_probe", "serve", "-A", "bench_app", "--expect-workers", "1",
                         "--port", str(port), "--interval", str(args.interval), "--deadline", str(args.deadline)],
                        env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                        start_new_session=True,
                    )
                wait_status(port, "healthy", START_TIMEOUT)
                print(machine())
                print(f"load: {args.concurrency} keep-alive connections from this process, {args.duration:g}s per "
                      f"phase, at most {args.max_requests} requests; serve --interval {args.interval:g} "
                      f"--deadline {args.deadline:g}")
                phases = [measured(port, Phase("idle (no requests)"), duration=args.duration)]
                phases.append(measured(port, Phase("healthy"), duration=args.duration,
                                       concurrency=args.concurrency, cap=args.max_requests))
                redis.freeze()
                try:
                    phases.append(measured(port, Phase("broker frozen"), duration=args.duration,
                                           concurrency=args.concurrency, cap=args.max_requests))
                finally:
                    redis.thaw()
                print(table(phases, args.interval))
                high = [math.ceil(p.seconds / args.interval) for p in phases]
                failed = any(p.errors for p in phases) or any(p.runs > h for p, h in zip(phases, high))
                if failed:
                    print("!!! FAILED: request errors, or probe runs the timer does not explain")
                return 1 if failed else 0
            finally:
                if serve is not None and serve.poll() is None:
                    os.killpg(serve.pid, signal.SIGTERM)
                    try:
                        serve.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        os.killpg(serve.pid, signal.SIGKILL)
                        serve.wait(timeout=5)


if __name__ == "__main__":
    sys.exit(main())
