"""``celery-probe demo``: show a healthy verdict, then a down one, against processes it starts itself.

The point is a first run that needs nothing installed or running: the demo starts a throwaway
broker (a private ``redis-server`` on a free loopback port, or kombu's filesystem transport in
a temp folder when there is no ``redis-server``), one real solo-pool worker of
:mod:`celery_probe.cli.demo_app`, and runs the real ``celery-probe run`` command twice, as an
operator would: once with the worker up, once after stopping it. Everything it starts is
stopped again in a ``finally`` block, also on Ctrl-C and SIGTERM, and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import click

from celery_probe.errors import status_of_exit_code
from celery_probe.present.text import use_colour
from celery_probe.testing import CeleryWorker, GaveUp, RedisServer, StartFailed

DEMO_APP = "celery_probe.cli.demo_app"
WORKER_NAME = "demo-worker@%h"
WORKER_READY_TIMEOUT = 30.0  # a cold interpreter importing celery takes about a second
WORKER_STOP_TIMEOUT = 10.0  # SIGTERM is a warm shutdown; SIGKILL after this
PROBE_DEADLINE = "5"
# The run enforces its own deadline (plus watchdog slack); this only guards against a run
# that hangs before its watchdog exists (for instance a stuck interpreter start).
PROBE_RUN_TIMEOUT = 60.0
CHILD_STOP_TIMEOUT = 5.0
# Virtual transports poll; kombu's default of 1 s would make every ping and task wait for it.
FILESYSTEM_POLLING_INTERVAL = 0.05

ENV_BROKER = "CELERY_PROBE_DEMO_BROKER"
ENV_BACKEND = "CELERY_PROBE_DEMO_BACKEND"
ENV_TRANSPORT_OPTIONS = "CELERY_PROBE_DEMO_TRANSPORT_OPTIONS"

EXPECTED_FIRST = ("healthy", 0)
EXPECTED_SECOND = ("down", 2)


class DemoError(Exception):
    """Something the demo needs did not happen; printed as one line, never as a traceback."""


@dataclass
class Broker:
    """The throwaway broker and result backend, as the env vars the demo app reads."""

    env: dict[str, str]
    description: str
    notes: list[str] = field(default_factory=list)


@dataclass
class RunOutcome:
    """What one ``celery-probe run`` answered: its exit code and the verdict it wrote."""

    code: int
    status: str
    reasons: list[str]

    def matches(self, expected: tuple[str, int]) -> bool:
        return (self.status, self.code) == expected


# -- output -------------------------------------------------------------------------------


def _colour() -> bool:
    """Same rule as the verdict the runs print, so the demo's own lines match them."""
    return use_colour(os.environ, sys.stdout.isatty())


def _say(text: str = "", *, bold: bool = False, fg: str | None = None, err: bool = False) -> None:
    """One line of the demo's own narration (click.echo flushes, so it precedes a child's output)."""
    colour = _colour()
    styled = click.style(text, bold=bold, fg=fg) if colour and (bold or fg) else text
    click.echo(styled, err=err, color=colour)


def _header(text: str) -> None:
    _say(f"==> {text}", bold=True)


def _show_command(command: list[str], env: Mapping[str, str]) -> str:
    """The run as a shell line an operator can paste (the env vars are part of the target)."""
    assignments = [f"{key}={shlex.quote(value)}" for key, value in env.items() if value]
    return " ".join([*assignments, shlex.join(command)])


# -- signals ------------------------------------------------------------------------------


def _raise_system_exit(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM's default action kills the process before ``finally`` can stop the children."""
    raise SystemExit(128 + signum)


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into SystemExit for the demo's lifetime, then restore the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM during cleanup.

    A second Ctrl-C while the worker is being stopped would otherwise abandon the cleanup and
    orphan the worker or redis-server. Cleanup only does bounded waits, so this cannot hang.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- broker -------------------------------------------------------------------------------


def _redis_broker(cleanup: ExitStack) -> Broker:
    """A private redis-server: the broker most deployments use, so the most realistic demo."""
    server = RedisServer()
    cleanup.callback(server.close)  # registered first: start() may be interrupted half-way
    try:
        server.start(timeout=10.0)
    except (TimeoutError, OSError, StartFailed) as exc:
        raise DemoError(f"could not start redis-server on port {server.port}: {exc}") from None
    return Broker(
        env={ENV_BROKER: server.url(0), ENV_BACKEND: server.url(1)},
        description=f"private redis-server on 127.0.0.1:{server.port} (broker db 0, results db 1)",
    )


def _filesystem_broker(workdir: Path) -> Broker:
    """kombu's filesystem transport: needs no server at all, only folders.

    ``control_folder`` holds the exchange tables that remote control (ping, inspect) relies
    on; kombu defaults it to ``control`` relative to the current directory, so it is set to
    an absolute folder that the worker and the probe run share. With kombu 5.7 ping and
    inspect work on this transport; the round trip reads results from ``file://``.
    """
    folders = {name: workdir / name for name in ("queues", "control", "results")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    options = {
        "data_folder_in": str(folders["queues"]),
        "data_folder_out": str(folders["queues"]),
        "control_folder": str(folders["control"]),
        "polling_interval": FILESYSTEM_POLLING_INTERVAL,
    }
    return Broker(
        env={
            ENV_BROKER: "filesystem://",
            ENV_BACKEND: f"file://{folders['results']}",
            ENV_TRANSPORT_OPTIONS: json.dumps(options),
        },
        description=f"kombu filesystem transport in {workdir} (no redis-server on PATH)",
        notes=[
            "remote control (ping/inspect) works on the filesystem transport with kombu 5.7 "
            "because worker and probe share one absolute control_folder",
            "on this polling transport a solo worker notices SIGTERM only between its 2 s broker "
            "drains, so stopping it takes a few seconds",
        ],
    )


def _start_broker(workdir: Path, cleanup: ExitStack) -> Broker:
    if RedisServer.available():
        return _redis_broker(cleanup)
    return _filesystem_broker(workdir / "broker")


# -- worker -------------------------------------------------------------------------------


def _start_worker(env: Mapping[str, str], cleanup: ExitStack) -> CeleryWorker:
    """One real solo-pool worker; ready once its log says so (bounded wait)."""
    worker = CeleryWorker(DEMO_APP, name=WORKER_NAME, pool="solo", env=env)
    cleanup.callback(worker.close)  # registered before start() so an interrupt still stops it
    try:
        worker.start(timeout=WORKER_READY_TIMEOUT)
    except OSError as exc:
        raise DemoError(f"could not start the demo worker: {exc}") from None
    except GaveUp:
        code = worker.proc.returncode if worker.proc is not None else "?"
        raise DemoError(
            f"the demo worker exited (code {code}) before it was ready: {_last_line(worker.log_tail())}"
        ) from None
    except TimeoutError:
        raise DemoError(
            f"the demo worker did not become ready within {WORKER_READY_TIMEOUT:g}s: "
            f"{_last_line(worker.log_tail())}"
        ) from None
    return worker


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(it wrote nothing)"


def _stop_worker(worker: CeleryWorker) -> None:
    worker.stop(timeout=WORKER_STOP_TIMEOUT)
    if worker.alive():
        raise DemoError(f"the demo worker (pid {worker.pid}) did not stop after SIGTERM and SIGKILL")


# -- probe runs ---------------------------------------------------------------------------


def probe_command(report_dir: Path) -> list[str]:
    """The exact ``celery-probe run`` an operator would type for the demo app."""
    return [
        sys.executable, "-m", "celery_probe", "run", "-A", DEMO_APP, "--expect-workers", "1",
        "--report-dir", str(report_dir), "--deadline", PROBE_DEADLINE,
    ]


def _run_probe(command: list[str], env: Mapping[str, str], report_dir: Path) -> RunOutcome:
    """Run the probes as a child that shares our terminal, so its colours are its own decision."""
    verdict_file = report_dir / "verdict.json"
    verdict_file.unlink(missing_ok=True)  # so a stale verdict is never read as this run's
    child = subprocess.Popen(command, env={**os.environ, **env}, stdin=subprocess.DEVNULL)
    try:
        code = child.wait(timeout=PROBE_RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DemoError(f"the probe run did not finish within {PROBE_RUN_TIMEOUT:g}s") from None
    finally:
        _end_child(child)
    return _outcome(code, verdict_file)


def _end_child(child: subprocess.Popen[Any]) -> None:
    """Stop a probe run we are abandoning (interrupt, timeout); no-op if it already exited."""
    if child.poll() is not None:
        return
    for send in (child.terminate, child.kill):
        send()
        try:
            child.wait(timeout=CHILD_STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            continue


def _outcome(code: int, verdict_file: Path) -> RunOutcome:
    """Status and reason codes from the verdict the run wrote; the exit code if it wrote none."""
    try:
        verdict: dict[str, Any] = json.loads(verdict_file.read_text())
    except (OSError, ValueError):
        return RunOutcome(code, status_of_exit_code(code) or f"exit {code}", [])
    reasons = [str(r.get("code")) for r in verdict.get("reasons") or [] if r.get("severity") != "info"]
    return RunOutcome(code, str(verdict.get("status", "unknown")), reasons)


def _describe(outcome: RunOutcome) -> str:
    """Status, exit code and the first reason (the probes list the root cause first)."""
    if not outcome.reasons:
        return f"{outcome.status} (exit {outcome.code})"
    more = f" +{len(outcome.reasons) - 1} more" if len(outcome.reasons) > 1 else ""
    return f"{outcome.status} (exit {outcome.code}, {outcome.reasons[0]}{more})"


# -- the demo -----------------------------------------------------------------------------


def _demo(workdir: Path, cleanup: ExitStack) -> int:
    """The two runs; returns 0 only when they answered healthy, then down."""
    broker = _start_broker(workdir, cleanup)
    _header(f"broker: {broker.description}")
    for note in broker.notes:
        _say(f"    note: {note}")

    started = time.monotonic()
    worker = _start_worker(broker.env, cleanup)
    _header(f"worker: {worker.name} (solo pool, pid {worker.pid}) ready in {time.monotonic() - started:.1f}s")

    report_dir = workdir / "reports"
    command = probe_command(report_dir)
    shown = _show_command(command, broker.env)

    _header("run 1 of 2: probing the deployment with its worker up (expect HEALTHY, exit 0)")
    _say(f"    $ {shown}")
    first = _run_probe(command, broker.env, report_dir)

    _header(f"stopping the worker (SIGTERM, pid {worker.pid})")
    stopping = time.monotonic()
    _stop_worker(worker)
    _say(f"    stopped in {time.monotonic() - stopping:.1f}s")

    _header("run 2 of 2: the same command with the worker gone (expect DOWN, exit 2, celery_worker_down)")
    _say(f"    $ {shown}")
    second = _run_probe(command, broker.env, report_dir)

    return _summarise(first, second)


def _summarise(first: RunOutcome, second: RunOutcome) -> int:
    ok = first.matches(EXPECTED_FIRST) and second.matches(EXPECTED_SECOND)
    verdict = "as expected" if ok else "NOT as expected (wanted healthy exit 0, then down exit 2)"
    _say(
        f"==> summary: run 1 {_describe(first)}, run 2 {_describe(second)}: {verdict}",
        bold=True, fg=None if ok else "red",
    )
    return 0 if ok else 1


def _clean_up(cleanup: ExitStack, workdir: Path, keep: bool) -> None:
    """Stop the worker and redis-server, then remove or point at the temp folder."""
    with _signals_held():
        try:
            cleanup.close()
        except Exception as exc:  # one failed stop must not hide the outcome
            _say(f"celery-probe demo: cleanup: {exc}", err=True)
        if keep:
            _say(f"==> kept the reports in {workdir / 'reports'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run_demo(keep: bool = False) -> int:
    """Run the demo; 0 when the verdicts were healthy then down, 1 otherwise.

    Ctrl-C and SIGTERM propagate (as KeyboardInterrupt / SystemExit) after the cleanup, so the
    CLI reports an interruption with its usual exit code rather than a demo failure.
    """
    workdir = Path(tempfile.mkdtemp(prefix="celery-probe-demo-"))
    with _sigterm_raises():
        cleanup = ExitStack()
        try:
            return _demo(workdir, cleanup)
        except DemoError as exc:
            _say(f"celery-probe demo: {exc}", err=True)
            return 1
        except (KeyboardInterrupt, SystemExit):
            _say("==> interrupted: stopping what the demo started", err=True)
            raise
        finally:
            _clean_up(cleanup, workdir, keep)


__all__ = ["run_demo", "probe_command"]
