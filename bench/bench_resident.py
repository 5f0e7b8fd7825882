#!/usr/bin/env python
"""CPU per probe run and memory growth of ``celery-probe serve``: resident runs beside fresh processes.

Run it as ``python bench/bench_resident.py [--window 300] [--interval 15] [--leak-runs 1000]``
with the Python that has celery-probe installed with its ``serve`` extra. It starts its own
redis-server on a free loopback port and one solo-pool worker of ``bench/bench_app.py``, then:

* **CPU per probe run.** Two ``celery-probe serve`` processes probe that deployment at the
  same ``--interval``, at the same time, half an interval apart: one as shipped (runs forked
  from its resident server, :mod:`celery_probe.run.resident`), one whose loop starts a fresh
  ``python -m celery_probe run`` per run, as serve did before (``serve --fresh-runs``; nothing
  else differs). Over ``--window``
  seconds it reads the kernel's process accounting from ``/proc/PID/stat``: utime + stime of
  serve and of every child of serve (the resident server), plus cutime + cstime of each of
  them, which is where the CPU of a process's reaped children lands (a run forked by the
  resident server is its child; a fresh run, or a resident server that died, is serve's), and
  all four of each warm session, the resident server's live child whose children are the runs
  forked from it (:mod:`celery_probe.run.warm`). Each
  window edge is taken just after a run ended (``celery_probe_last_run_timestamp_seconds``
  changed), so no run is half counted. CPU per run = CPU over the window / runs ended in it.
* **Memory growth.** One resident ``serve`` at ``--leak-interval`` (default 0.5 s, serve's
  minimum) runs ``--leak-runs`` probe runs; the RSS of serve plus its resident server plus
  the server's warm session (a long-lived process too) is read after 100 runs and at
  intervals to the end.

Every process it starts is stopped on the way out, also on Ctrl-C or SIGTERM; every wait has
a bound.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

try:
    from prometheus_client.parser import text_string_to_metric_families

    from celery_probe import __version__ as PROBE_VERSION
    from celery_probe.testing import CeleryWorker, RedisServer, free_port, wait_until
except ImportError:  # pragma: no cover - wrong interpreter or no serve extra
    sys.exit("bench_resident.py: needs celery_probe with its serve extra; run it with the virtualenv's python")

BENCH_DIR = Path(__file__).resolve().parent
START_TIMEOUT = 60.0
TICK = os.sysconf("SC_CLK_TCK")
# serve as before: every run a fresh interpreter (the loop's resident default turned off).
def metrics(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    return {sample.name: sample.value for family in text_string_to_metric_families(body)
            for sample in family.samples if not sample.labels}


@dataclass
class Cpu:
    """Seconds of CPU, from /proc/PID/stat (fields utime, stime, cutime, cstime)."""

    serve: float = 0.0  # serve itself
    serve_children: float = 0.0  # serve's reaped children: fresh runs, dead resident servers
    server: float = 0.0  # the resident server itself
    runs: float = 0.0  # the resident server's reaped children: forked runs, ended warm sessions
    warm: float = 0.0  # the live warm sessions: their own CPU and their reaped runs'

    @property
    def total(self) -> float:
        return self.serve + self.serve_children + self.server + self.runs + self.warm

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.serve - other.serve, self.serve_children - other.serve_children,
                   self.server - other.server, self.runs - other.runs, self.warm - other.warm)


def stat(pid: int) -> list[int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return [int(value) for value in fields[11:15]]  # utime stime cutime cstime (fields 14-17)


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_of(pid: int) -> Cpu:
    utime, stime, cutime, cstime = stat(pid)
    cpu = Cpu(serve=(utime + stime) / TICK, serve_children=(cutime + cstime) / TICK)
    for child in children(pid):
        try:
            c_utime, c_stime, c_cutime, c_cstime = stat(child)
        except OSError:
            continue  # it ended meanwhile: serve reaps it, and its CPU lands in serve's cutime
        cpu.server += (c_utime + c_stime) / TICK
        cpu.runs += (c_cutime + c_cstime) / TICK
        for warm in children(child):  # a warm session: its runs are its children, reaped by it
            try:
                cpu.warm += sum(stat(warm)) / TICK
            except OSError:
                continue  # it ended meanwhile: its CPU lands in the resident server's cutime
    return cpu


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Serve:
    """One ``celery-probe serve`` process of the benchmark."""

    def __init__(self, name: str, *, resident: bool, interval: float, deadline: float, env: dict[str, str],
                 workdir: Path) -> None:
        self.name, self.port = name, free_port()
        how = [] if resident else ["--fresh-runs"]
        self.log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery_probe", "serve", *how, "-A", "bench_app", "--expect-workers", "1",
             "--port", str(self.port), "--interval", str(interval), "--deadline", str(deadline)],
            env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            start_new_session=True,
        )

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            try:
                return self._status() == "healthy"
            except (OSError, http.client.HTTPException, ValueError):
                return False  # not listening yet

        wait_until(healthy, timeout=START_TIMEOUT, interval=0.2, what=f"{self.name} healthy")

    def _status(self) -> str | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/api/interactions/health/celery")
            return json.loads(conn.getresponse().read())["status"]
        finally:
            conn.close()

    def after_a_run(self, timeout: float) -> tuple[float, Cpu]:
        """Wait until a run ends; then (runs ended so far, CPU so far), read at once."""
        first = metrics(self.port).get("celery_probe_last_run_timestamp_seconds")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = metrics(self.port)
            if found.get("celery_probe_last_run_timestamp_seconds") != first:
                return found["celery_probe_runs_total"], cpu_of(self.proc.pid)
            # Twice a second: a run takes well under an interval, so the edge still falls between
            # runs, and the polling's own cost (it is in serve's CPU, for both serves) stays small.
            time.sleep(0.5)
        raise TimeoutError(f"{self.name}: no run ended within {timeout:g}s")

    def rss(self) -> tuple[float, float, float]:
        """RSS in MB of serve, of its resident server (0 if none) and of the server's warm sessions."""
        servers = children(self.proc.pid)
        warm = sum(rss_mb(session) for server in servers for session in children(server))
        return rss_mb(self.proc.pid), sum(rss_mb(child) for child in servers), warm

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.log.close()


def cpu_phase(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> bool:
    serves = [Serve("resident", resident=True, interval=args.interval, deadline=args.deadline, env=env,
                    workdir=workdir)]
    try:
        serves[0].wait_healthy()
        serves[0].after_a_run(args.interval * 3)  # staggered by half an interval from the other
        time.sleep(args.interval / 2)  # the stagger itself
        serves.append(Serve("fresh", resident=False, interval=args.interval, deadline=args.deadline, env=env,
                            workdir=workdir))
        serves[1].wait_healthy()
        for serve in serves:  # let the resident server take over from the first, fresh, runs
            serve.after_a_run(args.interval * 3)
        starts = {serve.name: serve.after_a_run(args.interval * 3) for serve in serves}
        time.sleep(max(0.0, args.window - args.interval))
        ends = {serve.name: serve.after_a_run(args.interval * 3) for serve in serves}
    finally:
        for serve in serves:
            serve.stop()
    print(f"\nCPU per probe run: serve --interval {args.interval:g} --deadline {args.deadline:g}, "
          f"window {args.window:g}s, both serves at once")
    head = ("serve", "runs", "window s", "serve", "serve's children", "resident server", "forked runs",
            "warm sessions", "total CPU s", "CPU per run s")
    rows = [head]
    per_run = {}
    for serve in serves:
        (runs0, cpu0), (runs1, cpu1) = starts[serve.name], ends[serve.name]
        runs, used = runs1 - runs0, cpu1 - cpu0
        per_run[serve.name] = used.total / runs if runs else float("nan")
        rows.append((serve.name, f"{runs:.0f}", f"{args.window:g}", f"{used.serve:.2f}", f"{used.serve_children:.2f}",
                     f"{used.server:.2f}", f"{used.runs:.2f}", f"{used.warm:.2f}", f"{used.total:.2f}",
                     f"{per_run[serve.name]:.3f}"))
    print(render(rows))
    ratio = per_run["fresh"] / per_run["resident"]
    print(f"resident: {per_run['resident']:.3f} s per run, {ratio:.1f}x less than a fresh process "
          f"({per_run['fresh']:.3f} s); target 0.1 s: {'met' if per_run['resident'] <= 0.1 else 'NOT met'}")
    return per_run["resident"] <= 0.1


def leak_phase(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> bool:
    serve = Serve("leak", resident=True, interval=args.leak_interval, deadline=args.deadline, env=env,
                  workdir=workdir)
    marks = sorted({100, *range(250, args.leak_runs, 250), args.leak_runs})
    rows = [("runs", "serve RSS MB", "resident server RSS MB", "warm session RSS MB", "sum MB", "elapsed s")]
    started = time.monotonic()
    sums: dict[int, float] = {}
    try:
        serve.wait_healthy()
        for mark in marks:
            limit = (mark + 10) * (args.leak_interval + args.deadline + 3.5)
            wait_until(lambda mark=mark: metrics(serve.port)["celery_probe_runs_total"] >= mark,
                       timeout=limit, interval=0.5, what=f"{mark} runs")
            own, server, warm = serve.rss()
            sums[mark] = own + server + warm
            rows.append((str(mark), f"{own:.1f}", f"{server:.1f}", f"{warm:.1f}", f"{sums[mark]:.1f}",
                         f"{time.monotonic() - started:.0f}"))
    finally:
        serve.stop()
    print(f"\nMemory: serve --interval {args.leak_interval:g} (resident), RSS of serve + its resident server"
          " + its warm session (shared pages counted in each)")
    print(render(rows))
    growth = sums[args.leak_runs] - sums[100]
    print(f"growth from run 100 to run {args.leak_runs}: {growth:+.1f} MB (limit 20 MB: "
          f"{'met' if growth <= 20 else 'NOT met'})")
    return growth <= 20


def render(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return (f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, celery-probe {PROBE_VERSION}, "
            f"load {os.getloadavg()[0]:.2f}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=300.0, help="seconds of CPU accounting (default 300)")
    parser.add_argument("--interval", type=float, default=15.0, help="serve --interval for CPU (default 15)")
    parser.add_argument("--deadline", type=float, default=2.0, help="serve --deadline (default 2)")
    parser.add_argument("--leak-runs", type=int, default=1000, help="runs of the memory phase (default 1000)")
    parser.add_argument("--leak-interval", type=float, default=0.5, help="serve --interval there (default 0.5)")
    parser.add_argument("--skip-cpu", action="store_true", help="only the memory phase")
    parser.add_argument("--skip-leak", action="store_true", help="only the CPU phase")
    args = parser.parse_args(argv)
    if args.window < args.interval or args.leak_runs < 100:
        parser.error("--window must be at least one --interval, and --leak-runs at least 100")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="celery-probe-bench-resident-"))
    ok = True
    with RedisServer() as redis:
        env = {**os.environ, "BENCH_BROKER": redis.url(0), "BENCH_BACKEND": redis.url(1),
               "PYTHONPATH": os.pathsep.join([str(BENCH_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        with CeleryWorker("bench_app", name="bench-resident@%h", env=env, pythonpath=[BENCH_DIR]):
            print(machine())
            if not args.skip_cpu:
                ok = cpu_phase(args, env, workdir) and ok
            if not args.skip_leak:
                ok = leak_phase(args, env, workdir) and ok
    print(f"logs in {workdir}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
