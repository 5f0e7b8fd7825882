#!/usr/bin/env python
"""Benchmark ``celery-probe run`` against ``celery inspect ping`` on a real, private deployment.

Run it as ``python bench/bench_run.py [--repeat N] [--json PATH]`` with the Python that has
celery-probe installed. It starts its own redis-server on a free loopback port and one
solo-pool worker of ``bench/bench_app.py``, then times each command as a separate process,
as cron or a Kubernetes exec probe would run it:

* healthy: ``celery-probe run`` with and without ``--expect-workers``, the peer
  ``celery inspect ping``, and the floor ``python -c "import pytest, celery"`` (interpreter
  start plus the imports no probe run can avoid);
* down: worker killed, broker frozen (SIGSTOP), broker refused (redis-server stopped), each
  with ``--deadline 5``, and the peer in the same state, capped at 30 s because it can hang.

Every process it starts is stopped on the way out, also on Ctrl-C or SIGTERM, and every
wait has a bound. See bench/README.md for what the numbers mean.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:
    from celery_probe import __version__ as PROBE_VERSION
    from celery_probe.testing import CeleryWorker, RedisServer, wait_until
except ImportError:  # pragma: no cover - wrong interpreter
    sys.exit("bench_run.py: celery_probe is not importable; run it with the virtualenv's python")

BENCH_DIR = Path(__file__).resolve().parent
APP = "bench_app"
WORKER_NAME = "bench@%h"
DEADLINE = 5.0  # --deadline of the down cases
CAP = 30.0  # no timed command may run longer; the peer hangs forever on a frozen broker
WORKER_START_TIMEOUT = 30.0
TARGETS = {"peer": 0.4, "floor": 1.5}  # celery-probe median / other median, at most

HEALTHY = "healthy"
PROBE = "celery-probe run --expect-workers 1"
PROBE_IDLE = "celery-probe run (idle window)"
PEER = "celery inspect ping"
CHECK = "celery-probe check URL (of a running serve)"
FLOOR = 'python -c "import pytest, celery"'
# ``import celery`` is lazy and loads almost nothing; any check that touches a broker through
# Celery also pays for the app, kombu and the transport's client library. This is that cost.
CONNECT_FLOOR = "python: import pytest, bench_app, one broker connection"
CONNECT_FLOOR_CODE = ("import pytest\nfrom bench_app import app\n"
                      "with app.connection_for_write() as conn:\n    conn.ensure_connection(max_retries=0)")


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Command:
    """One timed command line; ``verdict`` says its stdout is a celery-probe JSON verdict."""

    tool: str
    argv: tuple[str, ...]
    verdict: bool = False
    expect_status: str | None = None  # the verdict status this case must produce
    expect_exit: int | None = None  # the exit code this case must produce


@dataclass
class Run:
    """One timed execution. ``exit_code`` is None when the command hit the cap."""

    seconds: float
    exit_code: int | None
    status: str | None = None
    causes: list[str] = field(default_factory=list)  # root-cause reason codes
    not_attempted: int = 0  # reasons that only say a probe was skipped for lack of time
    said: str = ""  # last line a non-verdict command printed
    problem: str | None = None  # why this run breaks the case's expectation

    @property
    def capped(self) -> bool:
        return self.exit_code is None


@dataclass
class Row:
    """All runs of one command in one case, summarised for the table and the JSON."""

    case: str
    tool: str
    runs: list[Run]

    @property
    def times(self) -> list[float]:
        return [run.seconds for run in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def capped(self) -> bool:
        return any(run.capped for run in self.runs)

    @property
    def problems(self) -> list[str]:
        return [run.problem for run in self.runs if run.problem]

    def outcome(self) -> str:
        """Exit code and verdict status, each distinct value once (a flaky case shows both)."""
        seen: list[str] = []
        for run in self.runs:
            if run.capped:
                text = f"capped at {CAP:g} s"
            else:
                text = f"{run.exit_code} {run.status}" if run.status else str(run.exit_code)
            if text not in seen:
                seen.append(text)
        return " / ".join(seen)

    def reasons(self) -> str:
        """Root-cause codes for celery-probe, or what the peer printed last."""
        causes: list[str] = []
        for run in self.runs:
            causes.extend(code for code in run.causes if code not in causes)
        if any(run.status for run in self.runs):
            skipped = max(run.not_attempted for run in self.runs)
            text = ", ".join(causes) or "-"
            return f"{text} (+{skipped} not attempted)" if skipped else text
        if self.capped:
            return f"no answer; killed at the {CAP:g} s cap, not repeated"
        said = next((run.said for run in self.runs if run.said), "")
        return said.split("Reason: ")[-1][:60] or "-"

    def as_json(self) -> dict[str, Any]:
        return {
            "case": self.case, "tool": self.tool, "median_s": round(self.median, 4),
            "min_s": round(min(self.times), 4), "max_s": round(max(self.times), 4),
            "capped": self.capped, "outcome": self.outcome(), "problems": self.problems,
            "runs": [asdict(run) for run in self.runs],
        }


@dataclass
class Ratio:
    """celery-probe's median over another command's median, against a target if it has one."""

    case: str
    tool: str
    versus: str
    value: float
    target: float | None
    bound_only: bool = False  # the other command was capped: the true ratio is smaller

    def text(self) -> str:
        shown = f"<= {self.value:.2f}" if self.bound_only else f"{self.value:.2f}"
        if self.target is None:
            return shown
        verdict = "ok" if self.value <= self.target else "MISSED"
        return f"{shown} ({verdict}, target <= {self.target:g})"


# ------------------------------------------------------------------------------ processes


class Deployment:
    """The private broker and worker every case runs against.

    A restarted worker is a new ``CeleryWorker``: the old one's log file already holds
    " ready.", so waiting on it again would return before the new process is ready.
    """

    def __init__(self) -> None:
        self.redis = RedisServer()
        self.worker: CeleryWorker | None = None

    @property
    def app_env(self) -> dict[str, str]:
        return {"BENCH_BROKER": self.redis.url(0), "BENCH_BACKEND": self.redis.url(1)}

    def start(self) -> None:
        self.redis.start()
        self.start_worker()

    def start_worker(self) -> None:
        self.stop_worker()
        self.worker = CeleryWorker(APP, name=WORKER_NAME, env=self.app_env, pythonpath=[BENCH_DIR])
        self.worker.start(timeout=WORKER_START_TIMEOUT)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def close(self) -> None:
        """Stop everything; each step bounded (SIGTERM, then SIGKILL after 10 s)."""
        try:
            self.stop_worker()
        finally:
            self.redis.close()


def child_env(app_env: dict[str, str]) -> dict[str, str]:
    """The environment of every timed command: the bench app, nothing inherited that steers it.

    CELERY_PROBE_* and Celery's own URL variables would silently change what is measured.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CELERY_PROBE_") and k not in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH", "")]))
    env.update(app_env)
    return env


def kill_group(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the command and anything it spawned (it runs in its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def run_once(command: Command, env: dict[str, str], cwd: Path) -> Run:
    """Time ``command`` as a separate process, wall clock from spawn to exit, capped at CAP."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        command.argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=CAP)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return check(command, Run(CAP, None), "", "")
    except BaseException:  # Ctrl-C: the child is in its own session and did not get SIGINT
        kill_group(proc)
        raise
    run = Run(time.perf_counter() - started, proc.returncode)
    return check(command, run, stdout, stderr)


def check(command: Command, run: Run, stdout: str, stderr: str) -> Run:
    """Read the verdict (or the last line printed) and record any broken expectation."""
    if command.verdict and not run.capped:
        read_verdict(run, stdout)
    elif not run.capped:
        lines = [line.strip() for line in (stdout + "\n" + stderr).splitlines() if line.strip()]
        run.said = lines[-1] if lines else ""
    wrong = []
    if command.expect_exit is not None and run.exit_code != command.expect_exit:
        wrong.append(f"exit {run.exit_code} (expected {command.expect_exit})")
    if command.expect_status is not None and run.status != command.expect_status:
        wrong.append(f"status {run.status} (expected {command.expect_status})")
    if wrong:
        run.problem = "; ".join(wrong)
        shout(command, run, stdout, stderr)
    return run


def read_verdict(run: Run, stdout: str) -> None:
    """Fill status and root causes from celery-probe's JSON verdict.

    Reasons whose message starts "not attempted" are consequences (a probe skipped because
    an earlier one used the deadline), so the table lists only the others by name.
    """
    try:
        verdict = json.loads(stdout)
    except ValueError:
        run.status = "no-json"
        return
    run.status = str(verdict.get("status"))
    for reason in verdict.get("reasons") or []:
        if reason.get("severity") == "info":
            continue
        if str(reason.get("message", "")).startswith("not attempted"):
            run.not_attempted += 1
        elif reason.get("code") not in run.causes:
            run.causes.append(str(reason.get("code")))


def shout(command: Command, run: Run, stdout: str, stderr: str) -> None:
    """Make a broken expectation impossible to miss in the output."""
    tail = "\n".join((stdout.strip().splitlines() + stderr.strip().splitlines())[-15:])
    print(f"\n!!! FAILED: {command.tool}: {run.problem}\n!!! {' '.join(command.argv)}", file=sys.stderr)
    if tail:
        print("\n".join(f"!!!   {line}" for line in tail.splitlines()), file=sys.stderr)


def measure(case: str, commands: Sequence[Command], repeats: int, env: dict[str, str], cwd: Path,
            *, warmup: int = 0) -> list[Row]:
    """Run the commands round-robin so drift and noise hit them all alike.

    A command that hit the cap is not run again in this case: further runs would only
    repeat the cap and stretch the benchmark by CAP seconds each.
    """
    for _ in range(warmup):
        for command in commands:
            run_once(command, env, cwd)
    rows = {command.tool: Row(case, command.tool, []) for command in commands}
    for round_ in range(repeats):
        for command in commands:
            row = rows[command.tool]
            if row.capped:
                continue
            run = run_once(command, env, cwd)
            row.runs.append(run)
            progress(f"{case:<16} {command.tool:<48} run {round_ + 1}/{repeats}: {run.seconds:6.2f} s")
    return list(rows.values())


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ cases


def commands(tools: dict[str, str], report_dir: Path, *, down: bool) -> list[Command]:
    """The four command lines; in a down case celery-probe gets --deadline and must say down."""
    probe = [tools["celery-probe"], "run", "-A", APP, "--format", "json", "--report-dir", str(report_dir)]
    if down:
        probe_cmds = [Command(f"{PROBE} --deadline {DEADLINE:g}",
                              (*probe, "--expect-workers", "1", "--deadline", f"{DEADLINE:g}"),
                              verdict=True, expect_status="down", expect_exit=2)]
    else:
        probe_cmds = [
            Command(PROBE, (*probe, "--expect-workers", "1"), verdict=True, expect_status=HEALTHY, expect_exit=0),
            Command(PROBE_IDLE, tuple(probe), verdict=True, expect_status=HEALTHY, expect_exit=0),
        ]
    peer = Command(PEER, (tools["celery"], "-A", APP, "inspect", "ping"), expect_exit=None if down else 0)
    floor = Command(FLOOR, (sys.executable, "-c", "import pytest, celery"), expect_exit=0)
    connect_floor = Command(CONNECT_FLOOR, (sys.executable, "-c", CONNECT_FLOOR_CODE), expect_exit=0)
    return [*probe_cmds, peer] + ([] if down else [floor, connect_floor])


@contextmanager
def worker_killed(deployment: Deployment) -> Iterator[None]:
    """SIGKILL the worker (no goodbye to the broker), and start a fresh one afterwards.

    Not restarted when the case is interrupted: the way out should not wait for a worker.
    """
    assert deployment.worker is not None
    deployment.worker.kill()
    yield
    deployment.start_worker()


@contextmanager
def broker_frozen(deployment: Deployment) -> Iterator[None]:
    """SIGSTOP redis-server: its port accepts connections and nothing ever answers."""
    deployment.redis.freeze()
    try:
        yield
    finally:
        deployment.redis.thaw()
    wait_until(deployment.redis.ping, timeout=10, what="redis-server answering after SIGCONT")


@contextmanager
def broker_refused(deployment: Deployment) -> Iterator[None]:
    """Stop redis-server for good (the last case): the same URL now refuses connections."""
    deployment.redis.stop()
    wait_until(lambda: port_refuses(deployment.redis.port), timeout=10, what="broker port refusing")
    yield


def port_refuses(port: int) -> bool:
    """True once nothing listens on ``port``, so the case really is 'connection refused'."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) != 0


DOWN_CASES: list[tuple[str, Callable[[Deployment], Any]]] = [
    ("worker killed", worker_killed),
    ("broker frozen", broker_frozen),
    ("broker refused", broker_refused),
]


def ratios(rows: list[Row]) -> list[Ratio]:
    """celery-probe over the peer (every case) and over the floor (healthy case)."""
    by_case: dict[str, dict[str, Row]] = {}
    for row in rows:
        by_case.setdefault(row.case, {})[row.tool] = row
    out: list[Ratio] = []
    for case, tools in by_case.items():
        peer, floor = tools.get(PEER), tools.get(FLOOR)
        for tool, row in tools.items():
            if not tool.startswith("celery-probe"):
                continue
            if peer:
                out.append(Ratio(case, tool, "peer", row.median / peer.median,
                                 TARGETS["peer"] if case == HEALTHY else None, bound_only=peer.capped))
            if floor:
                out.append(Ratio(case, tool, "floor", row.median / floor.median, TARGETS["floor"]))
    return out


# ------------------------------------------------------------------------------ report


def cpu_model() -> str:
    """The first 'model name' of /proc/cpuinfo (the platform module does not know it on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(redis: RedisServer) -> dict[str, str]:
    """What the figures depend on, so two runs can be compared honestly."""
    import celery
    import kombu
    import pytest
    import redis as redis_py

    with redis.client() as client:
        server = str(client.info("server").get("redis_version"))
    return {
        "cpu": cpu_model(), "cores": str(os.cpu_count()), "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(), "celery": celery.__version__, "kombu": kombu.__version__,
        "redis-py": redis_py.__version__, "redis-server": server, "pytest": pytest.__version__,
        "celery-probe": PROBE_VERSION, "load-average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def machine_line(info: dict[str, str]) -> str:
    return (f"Machine: {info['cpu']}, {info['cores']} cores, {info['os']}; Python {info['python']}, "
            f"celery {info['celery']}, kombu {info['kombu']}, redis-py {info['redis-py']}, "
            f"Redis server {info['redis-server']}, pytest {info['pytest']}, celery-probe {info['celery-probe']}; "
            f"load average at start {info['load-average']}")


def table(rows: list[Row], found: list[Ratio]) -> str:
    """One Markdown table: a row per case and command, ratios on the celery-probe rows."""
    header = ["case", "tool", "runs", "median s", "min s", "max s", "exit / status", "reasons / output",
              "vs inspect ping", "vs floor"]
    lines = [header, ["---"] * len(header)]
    for row in rows:
        mine = {r.versus: r.text() for r in found if r.case == row.case and r.tool == row.tool}
        flag = " FAILED" if row.problems else ""
        lines.append([
            row.case, row.tool, str(len(row.runs)), f"{row.median:.3f}", f"{min(row.times):.3f}",
            f"{max(row.times):.3f}", row.outcome() + flag, row.reasons(), mine.get("peer", ""),
            mine.get("floor", ""),
        ])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "| " + " | ".join(cell.ljust(widths[i]) if cell != "---" else "-" * widths[i]
                          for i, cell in enumerate(line)) + " |"
        for line in lines
    )


def write_json(path: Path, info: dict[str, str], args: argparse.Namespace, rows: list[Row],
               found: list[Ratio]) -> None:
    """The same figures for machines: per-run times, outcomes and ratios."""
    payload = {
        "machine": info,
        "settings": {"repeat": args.repeat, "down_repeat": args.down_repeat, "deadline_s": DEADLINE,
                     "cap_s": CAP, "targets": TARGETS},
        "rows": [row.as_json() for row in rows],
        "ratios": [asdict(r) | {"met": None if r.target is None else r.value <= r.target} for r in found],
        "expectations_met": not any(row.problems for row in rows),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")


# ------------------------------------------------------------------------------ main


def compile_bytecode() -> None:
    """Write the bytecode of celery-probe and its built-in probes, as a wheel install does.

    An editable install run with PYTHONDONTWRITEBYTECODE=1 (or a read-only checkout) would
    otherwise compile every module on every timed run, a cost no installed copy has.
    """
    import compileall

    import celery_probe
    from celery_probe.run.in_process import builtin_probes_dir

    for folder in (Path(celery_probe.__file__).parent, builtin_probes_dir()):
        compileall.compile_dir(folder, quiet=1)


def find_tools() -> dict[str, str]:
    """celery-probe and celery from the running interpreter's bin directory, else PATH.

    Not resolving symlinks on purpose: a virtualenv's python is a link to the base one.
    Also writes celery-probe's bytecode (see compile_bytecode) so runs time an installed copy.
    """
    compile_bytecode()
    tools: dict[str, str] = {}
    for name in ("celery-probe", "celery"):
        local = Path(sys.executable).parent / name
        found = str(local) if local.exists() else shutil.which(name)
        if not found:
            sys.exit(f"bench_run.py: {name} not found next to {sys.executable} or on PATH")
        tools[name] = found
    return tools


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="timed runs per command, healthy case (default 7)")
    parser.add_argument("--down-repeat", type=int, default=3, help="timed runs per command, down cases (default 3)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.down_repeat < 1:
        parser.error("--repeat and --down-repeat must be at least 1")
    return args


def raise_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so the finally blocks stop the broker and worker."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def benchmark(args: argparse.Namespace, deployment: Deployment, workdir: Path) -> tuple[list[Row], dict[str, str]]:
    """Start the deployment, time the healthy case, then each down case in turn."""
    tools = find_tools()
    if not RedisServer.available():
        sys.exit("bench_run.py: redis-server is not installed")
    progress(f"starting redis-server and a solo worker of {APP} ...")
    deployment.start()
    info = machine(deployment.redis)
    env = child_env(deployment.app_env)
    reports = workdir / "reports"
    rows = measure(HEALTHY, commands(tools, reports, down=False), args.repeat, env, workdir, warmup=1)
    for case, state in DOWN_CASES:
        with state(deployment):
            rows += measure(case, commands(tools, reports, down=True), args.down_repeat, env, workdir)
    return rows, info


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="celery-probe-bench-"))
    deployment = Deployment()
    try:
        rows, info = benchmark(args, deployment, workdir)
    except KeyboardInterrupt:
        print("\nbench_run.py: interrupted; stopping the broker and worker", file=sys.stderr)
        return 130
    finally:
        deployment.close()
        shutil.rmtree(workdir, ignore_errors=True)
    found = ratios(rows)
    print()
    print(machine_line(info))
    print()
    print(table(rows, found))
    if args.json:
        write_json(args.json, info, args, rows, found)
        print(f"\nJSON written to {args.json}")
    failed = [row for row in rows if row.problems]
    if failed:
        print(f"\n!!! {len(failed)} row(s) broke their expectation: "
              + "; ".join(f"{r.case} / {r.tool}: {r.problems[0]}" for r in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
