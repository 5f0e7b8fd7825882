"""Section 4 of bench_peers.py: ``celery-probe serve``'s health path under load, broker healthy and frozen.

``celery-probe serve`` runs as its own process against the shared deployment. The load comes
from ``wrk`` (a second process on loopback; ``apt-get install wrk``), bounded by its duration
and by a request cap enforced in a small Lua script; without wrk it falls back to
bench_serve.py's threaded keep-alive client in this process. The health path, the probe-run
counter (``celery_probe_runs_total`` from /metrics) and the status wait come from bench_serve.py.
Broker traffic per phase is read from Redis ``INFO commandstats`` (PUBLISH: pidbox broadcasts
and event heartbeats; LPUSH: replies and task messages).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench_run import APP, CHECK, Command, Row, run_once
from bench_scale import commands as commandstats
from peers_report import Section
from peers_verdict import Shared

from celery_probe.testing import free_port, wait_until

WRK_SCRIPT = r"""
local cap = 0
local answered = 0
function init(args) cap = tonumber(args[1]) or 0 end
function response(status, headers, body)
  answered = answered + 1
  if cap > 0 and answered >= cap then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('PEERS_WRK {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, '
    .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass
class Load:
    """How the requests are sent."""

    duration: float
    connections: int
    threads: int
    max_requests: int
    check_repeats: int = 7
    wrk: str | None = field(default_factory=lambda: shutil.which("wrk"))

    def describe(self) -> str:
        if self.wrk:
            return f"wrk -t{self.threads} -c{self.connections} -d{self.duration:g}s (second process, keep-alive)"
        return f"{self.connections} keep-alive threads in this process (wrk not installed)"


@dataclass
class Phase:
    """One load phase and what the server and the broker did during it."""

    name: str
    seconds: float = 0.0
    requests: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    served: list[str] = field(default_factory=list)
    runs: int = 0
    redis: dict[str, int] = field(default_factory=dict)


def run_wrk(load: Load, url: str, workdir: Path, phase: Phase) -> None:
    """wrk against ``url`` for ``load.duration`` s, at most ``load.max_requests`` answers."""
    script = workdir / "peers_wrk.lua"
    script.write_text(WRK_SCRIPT)
    per_thread = math.ceil(load.max_requests / load.threads)
    argv = [str(load.wrk), f"-t{load.threads}", f"-c{load.connections}", f"-d{load.duration:g}s", "--timeout", "5s",
            "-s", str(script), url, "--", str(per_thread)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=load.duration + 30)
    except BaseException:  # timeout or Ctrl-C: wrk goes too
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=5)
        raise
    line = next((ln for ln in out.splitlines() if ln.startswith("PEERS_WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out[-500:]}")
    stats = json.loads(line.removeprefix("PEERS_WRK "))
    phase.seconds = stats["duration_us"] / 1e6
    phase.requests = stats["requests"]
    phase.errors = sum(stats[k] for k in ("connect", "read", "write", "status", "timeout"))
    phase.p50_ms, phase.p99_ms, phase.max_ms = (stats[k] / 1000 for k in ("p50_us", "p99_us", "max_us"))


def run_threads(load: Load, port: int, phase: Phase) -> None:
    """bench_serve.py's own client, when wrk is missing."""
    import bench_serve

    measured = bench_serve.Phase(phase.name)
    bench_serve.load(port, measured, duration=load.duration, concurrency=load.connections, cap=load.max_requests)
    phase.seconds, phase.requests, phase.errors = measured.seconds, len(measured.latencies), measured.errors
    if measured.latencies:
        phase.p50_ms, phase.p99_ms = (measured.percentile(q) * 1000 for q in (0.5, 0.99))  # type: ignore[operator]
        phase.max_ms = max(measured.latencies) * 1000


@contextmanager
def serve_process(shared: Shared, interval: float, deadline: float) -> Iterator[int]:
    """``celery-probe serve -A bench_app --expect-workers 1`` on a free loopback port."""
    import bench_serve

    port = free_port()
    with open(shared.workdir / "serve.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery_probe", "serve", "-A", APP, "--expect-workers", "1", "--host", "127.0.0.1",
             "--port", str(port), "--interval", f"{interval:g}", "--deadline", f"{deadline:g}"],
            env=shared.env, cwd=shared.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True,
        )
    try:
        bench_serve.wait_status(port, "healthy", bench_serve.START_TIMEOUT)
        yield port
    finally:
        for signum, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, signum)
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue


def served_status(port: int) -> str:
    import bench_serve

    try:
        status, body = bench_serve.get(port, bench_serve.HEALTH)
        return str(json.loads(body)["status"]) if status == 200 else f"HTTP {status}"
    except (OSError, ValueError, KeyError) as exc:
        return f"error {type(exc).__name__}"


def measure(shared: Shared, port: int, load: Load, name: str, *, requests: bool, frozen: bool) -> Phase:
    """One phase: optional load, optional frozen broker; probe runs and broker commands counted."""
    import bench_serve

    phase = Phase(name, served=[served_status(port)])
    redis = shared.deployment.redis
    runs_before, stats_before = bench_serve.runs_total(port), commandstats(redis)
    if frozen:
        redis.freeze()
    try:
        if not requests:
            started = time.monotonic()
            time.sleep(load.duration)  # an idle period is what this phase measures
            phase.seconds = time.monotonic() - started
        elif load.wrk:
            run_wrk(load, f"http://127.0.0.1:{port}{bench_serve.HEALTH}", shared.workdir, phase)
        else:
            run_threads(load, port, phase)
        phase.served.append(served_status(port))
        phase.runs = bench_serve.runs_total(port) - runs_before
    finally:
        if frozen:
            redis.thaw()
    if frozen:
        wait_until(redis.ping, timeout=10, what="redis-server answering after SIGCONT")
    after = commandstats(redis)
    phase.redis = {k: after.get(f"cmdstat_{k}", 0) - stats_before.get(f"cmdstat_{k}", 0) for k in ("publish", "lpush")}
    return phase


def serve_section(shared: Shared, load: Load, *, interval: float, deadline: float) -> Section:
    """Section 4: idle baseline, then the health path under load with the broker healthy, then frozen."""
    import bench_serve

    section = Section(
        f"4. celery-probe serve under load: GET /api/interactions/health/celery, {load.describe()}; "
        f"serve --interval {interval:g} --deadline {deadline:g}",
        ["broker", "requests", "req/s", "p50 ms", "p99 ms", "max ms", "errors", "verdict served",
         "probe runs (timer allows)", "PUBLISH", "LPUSH"],
    )
    with serve_process(shared, interval, deadline) as port:
        phases = [
            measure(shared, port, load, "healthy, no requests", requests=False, frozen=False),
            measure(shared, port, load, "healthy", requests=True, frozen=False),
            measure(shared, port, load, "frozen (SIGSTOP)", requests=True, frozen=True),
        ]
        thawed_runs = bench_serve.runs_total(port)  # a run that began while frozen may still be ending
        wait_until(lambda: bench_serve.runs_total(port) > thawed_runs + 1 and served_status(port) == "healthy",
                   timeout=3 * interval + 2 * deadline, what="serve healthy again after the frozen phase")
        check = timed_check(shared, port, load.check_repeats)
    for p in phases:
        low, high = math.floor(p.seconds / interval), math.ceil(p.seconds / interval)
        rate = f"{p.requests / p.seconds:,.0f}" if p.requests else "-"
        section.rows.append([
            p.name, f"{p.requests:,}", rate, _ms(p.p50_ms), _ms(p.p99_ms), _ms(p.max_ms), str(p.errors),
            " -> ".join(dict.fromkeys(p.served)), f"{p.runs} ({low}-{high})", str(p.redis.get("publish", 0)),
            str(p.redis.get("lpush", 0)),
        ])
        section.data.append(asdict(p) | {"timer_allows": [low, high]})
    section.data.append(check.as_json())
    section.notes += [
        (f"`celery-probe check URL` against this serve, as a fresh process (the resident mode: the verdict "
         f"is at most --interval old): median {check.median:.3f} s over {len(check.times)} runs, "
         f"exit {check.outcome()}."),
        "verdict served: the health path's status at the start and at the end of the phase.",
        ("probe runs: celery_probe_runs_total from /metrics over the phase; the start-to-start timer allows "
        "floor..ceil(seconds / interval). Requests never start a run."),
        ("PUBLISH / LPUSH: Redis commandstats over the phase, the probe runs' broadcasts and replies plus the "
        "worker's heartbeats and Flower's enable_events broadcasts; the no-request row is the baseline. For "
        "the frozen phase they are read after SIGCONT, so they include the commands Redis ran when it thawed."),
    ]
    return section


def timed_check(shared: Shared, port: int, repeats: int) -> Row:
    """``celery-probe check`` of the running serve's health path, timed from spawn to exit."""
    import bench_serve

    url = f"http://127.0.0.1:{port}{bench_serve.HEALTH}"
    command = Command(CHECK, (shared.tools["celery-probe"], "check", url), expect_exit=0)
    runs = [run_once(command, shared.env, shared.workdir) for _ in range(repeats + 1)][1:]  # first: warm-up
    return Row("serve", CHECK, runs)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"

