#!/usr/bin/env python
"""``celery-probe serve --targets`` with many targets: its CPU, its verdicts' ages, its latency.

Run it as ``python bench/bench_serve_targets.py [--targets 20] [--interval 15] [--window 300]``
with the virtualenv's Python. It starts two private redis-servers on free loopback ports, a
solo-pool worker of ``bench/bench_app.py`` on each, and one ``celery-probe serve --targets``
whose file names TARGETS targets: all but one probe the first deployment (each its own
target, with its own loop and runs), the last one, ``frozen``, probes the second.

0. **Start**: how long after serve started every target's verdict was first healthy (all
   targets' first runs are due at once).
1. **Steady state** (WINDOW seconds, no load): this process scrapes ``/metrics`` every
   second, as Prometheus would, and records every target's ``celery_probe_verdict_age_seconds``
   and ``celery_probe_status`` (every deployment is healthy, so any other status is false).
   The CPU of serve and all its descendants (live ones read from /proc, exited ones from
   their parents' ``cutime``/``cstime``) is read at both ends of the window. It prints the CPU
   in % of one core, per probe run, and the oldest verdict any scrape saw against the
   contract of interval + deadline.
2. **One broker frozen** (LOAD seconds): redis-server of ``frozen`` gets SIGSTOP while
   CONCURRENCY connections GET the overall health path, /healthz, /metrics and the frozen
   target's own health path round-robin. It prints latency percentiles (p50, p99, max), the
   errors, and the runs the healthy targets completed meanwhile.

Every process it starts is stopped on the way out, also on Ctrl-C or SIGTERM; every wait has a
bound and the load a request cap.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

try:
    from prometheus_client.parser import text_string_to_metric_families

    from celery_probe import __version__ as PROBE_VERSION
    from celery_probe.testing import CeleryWorker, RedisServer, free_port, wait_until
    from celery_probe.verdict.mapper import STATUSES
except ImportError:  # pragma: no cover - wrong interpreter or no serve extra
    sys.exit("bench_serve_targets.py: needs celery_probe with its serve extra; run it with the virtualenv's python")

BENCH_DIR = Path(__file__).resolve().parent
HEALTH = "/api/interactions/health/celery"
TICK = os.sysconf("SC_CLK_TCK")
START_TIMEOUT = 120.0


def get(port: int, path: str, timeout: float = 5.0, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def scrape_all(port: int) -> tuple[dict[tuple[str, str], float], dict[str, str]]:
    """``{(sample name, target): value}`` of serve's /metrics, and ``{target: status}``: the
    status whose ``celery_probe_status`` sample is 1."""
    _status, body = get(port, "/metrics")
    samples: dict[tuple[str, str], float] = {}
    statuses: dict[str, str] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            target = sample.labels.get("target", "")
            samples[(sample.name, target)] = sample.value
            if sample.name == "celery_probe_status" and sample.value == 1.0:
                statuses[target] = sample.labels["status"]
    return samples, statuses


def scrape(port: int) -> dict[tuple[str, str], float]:
    """``{(sample name, target): value}`` of serve's /metrics."""
    return scrape_all(port)[0]


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` itself, and of every descendant, live or exited (reaped into a
    parent's cutime)."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    own: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child, parent = int(entry.name), int(fields[1])
        children.setdefault(parent, []).append(child)
        times[child] = sum(int(v) for v in fields[11:15]) / TICK  # utime stime cutime cstime
        own[child] = sum(int(v) for v in fields[11:13]) / TICK

    def total(node: int) -> float:
        return times.get(node, 0.0) + sum(total(c) for c in children.get(node, []))

    return own.get(pid, 0.0), total(pid) - own.get(pid, 0.0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def steady(port: int, pid: int, window: float, targets: list[str]) -> dict[str, float]:
    """CPU and the oldest verdict age seen by a scrape every second over ``window`` seconds."""
    first = scrape(port)
    runs0 = sum(v for (name, _t), v in first.items() if name == "celery_probe_runs_total")
    (serve0, rest0), t0 = tree_cpu(pid), time.monotonic()
    oldest = {t: 0.0 for t in targets}
    seen = dict.fromkeys(STATUSES, 0)  # target verdicts over all scrapes, by status
    scrapes = 0
    while time.monotonic() - t0 < window:
        tick = time.monotonic()
        samples, statuses = scrape_all(port)
        scrapes += 1
        for (name, target), value in samples.items():
            if name == "celery_probe_verdict_age_seconds" and target in oldest:
                oldest[target] = max(oldest[target], value)
        for target, status in statuses.items():
            if target in oldest:
                seen[status] += 1
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    elapsed = time.monotonic() - t0
    serve1, rest1 = tree_cpu(pid)
    serve_cpu = serve1 - serve0
    cpu = serve_cpu + rest1 - rest0
    runs = sum(v for (name, _t), v in scrape(port).items() if name == "celery_probe_runs_total") - runs0
    return {**seen, "seconds": elapsed, "cpu_s": cpu, "serve_cpu_s": serve_cpu, "runs": runs, "scrapes": scrapes,
            "oldest_age_s": max(oldest.values()), "oldest_target": max(oldest, key=oldest.__getitem__)}


def loaded(port: int, seconds: float, concurrency: int, cap: int, paths: list[str]) -> dict[str, float]:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        i = offset
        while time.monotonic() < stop_at:
            with lock:
                if len(latencies) + errors[0] >= cap:
                    return
            started = time.perf_counter()
            try:
                status, _body = get(port, paths[i % len(paths)], conn=conn)
                ok = status in (200, 503)
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            with lock:
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[0] += 1
            i += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 10)
    return {"requests": len(latencies), "errors": errors[0], "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000, "max_ms": max(latencies, default=float("nan")) * 1000}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--interval", type=float, default=15.0)
    parser.add_argument("--deadline", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=300.0, help="seconds of the steady-state window")
    parser.add_argument("--load", type=float, default=30.0, help="seconds of load with one broker frozen")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-requests", type=int, default=200_000)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="celery-probe-bench-targets-"))
    serve: subprocess.Popen[bytes] | None = None
    with RedisServer() as main_redis, RedisServer() as frozen_redis:
        base = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")])}
        env_main = {**base, "BENCH_BROKER": main_redis.url(0), "BENCH_BACKEND": main_redis.url(1)}
        env_frozen = {**base, "BENCH_BROKER": frozen_redis.url(0), "BENCH_BACKEND": frozen_redis.url(1)}
        with CeleryWorker("bench_app", name="fleet-main@%h", env=env_main, pythonpath=[BENCH_DIR]), \
                CeleryWorker("bench_app", name="fleet-frozen@%h", env=env_frozen, pythonpath=[BENCH_DIR]):
            names = [f"t{n:02d}" for n in range(1, args.targets)] + ["frozen"]
            lines = [f"[defaults]\ndeadline = {args.deadline}\nexpect-workers = 1\n"]
            for name in names:
                redis = frozen_redis if name == "frozen" else main_redis
                lines.append(f'[targets.{name}]\nbroker = "{redis.url(0)}"\nbackend = "{redis.url(1)}"\n')
            targets_file = workdir / "targets.toml"
            targets_file.write_text("".join(lines))
            port = free_port()
            try:
                with open(workdir / "serve.log", "wb") as out:
                    serve = subprocess.Popen(
                        [sys.executable, "-m", "celery_probe", "serve", "--targets", str(targets_file),
                         "--port", str(port), "--interval", str(args.interval)],
                        env=base, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                        start_new_session=True)
                started = time.monotonic()

                def all_healthy() -> bool:
                    status, body = get(port, "/healthz")
                    return status == 200 and b'"unknown"' not in body and b'"degraded"' not in body

                wait_until(all_healthy, timeout=START_TIMEOUT, interval=0.5, what="every target healthy")
                first_healthy = time.monotonic() - started
                print(f"celery-probe {PROBE_VERSION}, Python {platform.python_version()}, {os.cpu_count()} CPUs, "
                      f"load average {os.getloadavg()[0]:.2f}")
                print(f"serve --targets: {args.targets} targets, interval {args.interval:g}s, deadline "
                      f"{args.deadline:g}s; steady window {args.window:g}s, scraped every second")
                quiet = steady(port, serve.pid, args.window, names)
                core = 100 * quiet["cpu_s"] / quiet["seconds"]
                per_run = quiet["cpu_s"] / quiet["runs"] if quiet["runs"] else float("nan")
                bound = args.interval + args.deadline
                print()
                print("| steady state | value |")
                print("|---|---|")
                print(f"| every target healthy after serve started | {first_healthy:.1f} s |")
                print(f"| probe runs in the window | {quiet['runs']:.0f} ({quiet['scrapes']} scrapes) |")
                print(f"| CPU of serve and its children | {quiet['cpu_s']:.1f} s = {core:.1f} % of one core |")
                print(f"| of which serve itself (web server, scheduling, reading reports) | {quiet['serve_cpu_s']:.1f} s |")
                print(f"| CPU per probe run | {per_run:.3f} s |")
                others = [s for s in STATUSES if s != "healthy"]
                not_healthy = sum(quiet[s] for s in others)
                print(f"| target verdicts not healthy, over all scrapes | {not_healthy:.0f} of "
                      f"{sum(quiet[s] for s in STATUSES):.0f} (" + ", ".join(
                          f"{s} {quiet[s]:.0f}" for s in others) + ") |")
                print(f"| oldest verdict at any scrape | {quiet['oldest_age_s']:.1f} s ({quiet['oldest_target']}); "
                      f"contract interval + deadline = {bound:g} s |")

                paths = [HEALTH, "/healthz", "/metrics", "/targets/frozen" + HEALTH, "/targets/t01/healthz"]
                before = scrape(port)
                frozen_redis.freeze()
                try:
                    burst = loaded(port, args.load, args.concurrency, args.max_requests, paths)
                finally:
                    frozen_redis.thaw()
                after = scrape(port)
                healthy_runs = sum(after[("celery_probe_runs_total", n)] - before[("celery_probe_runs_total", n)]
                                   for n in names if n != "frozen")
                print()
                print(f"| one broker frozen, {args.concurrency} clients, {args.load:g}s | value |")
                print("|---|---|")
                print(f"| requests (errors) | {burst['requests']} ({burst['errors']}) |")
                print(f"| latency p50 / p99 / max | {burst['p50_ms']:.1f} / {burst['p99_ms']:.1f} / "
                      f"{burst['max_ms']:.1f} ms |")
                print(f"| runs of the other {len(names) - 1} targets meanwhile | {healthy_runs:.0f} "
                      f"(at one per interval: {(len(names) - 1) * args.load / args.interval:.0f}) |")
                stale = max(after[("celery_probe_verdict_age_seconds", n)] for n in names if n != "frozen")
                print(f"| oldest verdict of the other targets at the end | {stale:.1f} s |")
                failed = burst["errors"] > 0 or max(quiet["oldest_age_s"], stale) > bound or not_healthy > 0
                if failed:
                    print("!!! FAILED: request errors, a verdict older than interval + deadline, or a "
                          "healthy deployment not reported healthy")
                return 1 if failed else 0
            finally:
                if serve is not None and serve.poll() is None:
                    os.killpg(serve.pid, signal.SIGTERM)
                    try:
                        serve.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        os.killpg(serve.pid, signal.SIGKILL)
                        serve.wait(timeout=5)


if __name__ == "__main__":
    sys.exit(main())
