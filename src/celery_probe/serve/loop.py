"""The background probe loop behind ``celery-probe serve``: one run at a time, out of process.

Why a child process per run, as :mod:`celery_probe.run.child` does: the probes bound every phase
with ``SIGALRM``, which only works on a main thread, and a frozen broker can block a kombu
call; neither may touch the web server's event loop. So each run is ``python -m
celery_probe run --format json`` under an asyncio subprocess with a hard timeout (the
deadline plus :data:`~celery_probe.run.child.PROCESS_SLACK`); a run that overruns is killed with
its process group. Broker URLs, which may carry passwords, travel in the child's
environment, never on its command line where ``ps`` shows them.

The loop keeps the latest :class:`Snapshot` and replaces it with one assignment when a run
ends, so a reader sees the old verdict or the new one, never a mix. Requests only read it:
the number of broker broadcasts depends on the interval, not on traffic
(:attr:`ProbeLoop.runs_started` counts them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from celery_probe.run.child import PROCESS_SLACK
from celery_probe.errors import ProbeUsageError
from celery_probe.storage.reports import LATEST, history_entry, load_report
from celery_probe.config.settings import ENV_PREFIX, REMEDIATION, SPECS, Settings, resolve_settings
from celery_probe.verdict.mapper import unknown_verdict
from celery_probe.verdict.model import Verdict

log = logging.getLogger("celery_probe.serve")

REAP_TIMEOUT = 5.0  # seconds to wait for a SIGKILLed child to be reaped
RECENT_RUNS = 100  # history entries kept in memory for the status page


@dataclass(frozen=True)
class Snapshot:
    """One verdict as published: what it says, and when and by which run it was produced."""

    verdict: Verdict
    report: dict[str, Any] | None = None
    produced_at: float | None = None  # Unix time the run ended; None before the first run
    produced_mono: float | None = None  # the same instant on the monotonic clock, for ages
    run: int = 0  # number of the run that produced it; 0 before the first run ends
    took_s: float | None = None  # wall time of the run, process start-up included


ARGV_SETTINGS = ("report_dir", "format")  # given on the child's command line instead
# Never passed: only `celery-probe run` remediates; the child runs with --no-on-down.
NOT_PASSED = (*ARGV_SETTINGS, *REMEDIATION)


def child_command(python: str, folder: Path) -> list[str]:
    """The probe run serve starts: JSON out, reports in ``folder``, never remediation."""
    return [python, "-m", "celery_probe", "run", "--format", "json", "--no-on-down", "--report-dir", str(folder)]


def child_environment(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a probe run that reproduces ``settings`` exactly.

    Every resolved setting is passed as its ``CELERY_PROBE_*`` variable, which outranks the
    ``pyproject.toml`` the child would read, and inherited ``CELERY_PROBE_*`` variables are
    dropped so the child cannot resolve anything differently from this process. The
    mapping is generic over :data:`celery_probe.config.settings.SPECS`, so a new setting travels
    too; :func:`check_round_trip` proves it does.
    """
    env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith(ENV_PREFIX)}
    for spec in SPECS:
        if spec.name in NOT_PASSED:
            continue
        value = _env_value(spec.name, settings)
        if value:
            env[ENV_PREFIX + spec.env] = value
    return env


def _env_value(name: str, settings: Settings) -> str | None:
    """The ``CELERY_PROBE_*`` spelling of one setting, as its parser reads it back."""
    if name == "queue_threshold":
        items = [str(settings.queue_threshold)] + [f"{q}={n}" for q, n in settings.queue_thresholds.items()]
        return ",".join(items)
    value = getattr(settings, name)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (tuple, list)):
        return ",".join("=".join(map(str, item)) if isinstance(item, tuple) else str(item) for item in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def check_round_trip(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to start when a setting would reach the probe process changed (one line, exit 64)."""
    env = child_environment(settings, environ)
    env.pop("CELERY_BROKER_URL", None)  # Celery's own fallback: the app reads it in the child too
    again = resolve_settings(environ=env, pyproject=False)
    for spec in SPECS:
        names = ("queue_threshold", "queue_thresholds") if spec.name == "queue_threshold" else (spec.name,)
        for name in names:
            if name not in NOT_PASSED and getattr(again, name) != getattr(settings, name):
                raise ProbeUsageError(
                    f"setting {name.replace('_', '-')} cannot be passed to the probe process unchanged "
                    f"({getattr(settings, name)!r} would arrive as {getattr(again, name)!r})"
                )


class ProbeLoop:
    """Runs the probes every ``interval`` seconds (start to start) and keeps the latest verdict.

    ``report_dir`` is where runs write their files; None gives each run a private temporary
    folder, removed afterwards, so a server running for months does not grow a history file.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        interval: float,
        report_dir: Path | None = None,
        python: str = sys.executable,
    ) -> None:
        check_round_trip(settings)
        self.settings = settings
        self.interval = interval
        self.report_dir = report_dir
        self.python = python
        self.hard_timeout = settings.deadline + PROCESS_SLACK
        self.snapshot = Snapshot(unknown_verdict(
            "no probe run has finished yet: the first one starts when the server does",
            code="celery_probe_no_evidence",
        ))
        self.runs_started = 0
        self.runs_killed = 0
        self.last_success: float | None = None  # Unix time of the latest healthy verdict
        # The history lines of the latest runs, for the status page when no report dir is kept.
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_RUNS)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop on the running event loop (idempotent)."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._forever(), name="celery-probe loop")

    async def stop(self) -> None:
        """Stop the loop and kill a run in progress (its process group included)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _forever(self) -> None:
        while True:
            began = time.monotonic()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug here must not end the loop, nor stay silent
                log.error("celery-probe: probe loop error: %s: %s", type(exc).__name__, exc)
                self._publish(unknown_verdict(f"the probe loop failed: {type(exc).__name__}: {exc}",
                                              code="celery_probe_error"), None, began)
            await asyncio.sleep(max(0.0, began + self.interval - time.monotonic()))

    # ------------------------------------------------------------------ one run

    async def run_once(self) -> Snapshot:
        """Run the probes once in a child process and publish the verdict. One run at a time."""
        async with self._lock:
            began = time.monotonic()
            folder = self.report_dir or Path(tempfile.mkdtemp(prefix="celery-probe-serve-"))
            try:
                verdict, report = await self._child_run(folder)
            finally:
                if self.report_dir is None:
                    shutil.rmtree(folder, ignore_errors=True)
            return self._publish(verdict, report, began)

    async def _child_run(self, folder: Path) -> tuple[Verdict, dict[str, Any] | None]:
        command = child_command(self.python, folder)
        self.runs_started += 1
        proc = await asyncio.create_subprocess_exec(
            *command, env=child_environment(self.settings), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), self.hard_timeout)
        except asyncio.TimeoutError:
            self.runs_killed += 1
            await _kill(proc)
            return unknown_verdict(
                f"the probe process did not finish within {self.hard_timeout:g}s and was killed",
                code="celery_probe_deadline_exceeded",
            ), None
        except BaseException:  # cancelled (server shutting down): leave no probe run behind
            await _kill(proc)
            raise
        try:
            verdict = json.loads(stdout)
        except ValueError:
            lines = stderr.decode(errors="replace").strip().splitlines() or ["no output"]
            return unknown_verdict(f"the probe process failed (exit {proc.returncode}): {lines[-1]}",
                                   code="celery_probe_error"), None
        if not isinstance(verdict, dict) or "status" not in verdict:
            return unknown_verdict("the probe process printed no verdict", code="celery_probe_error"), None
        report, _problem = await asyncio.to_thread(load_report, folder / LATEST)
        return cast(Verdict, verdict), report if isinstance(report, dict) else None  # the child's mapper wrote it

    def _publish(self, verdict: Verdict, report: dict[str, Any] | None, began: float) -> Snapshot:
        now_mono, now = time.monotonic(), time.time()
        previous = self.snapshot.verdict.get("status")
        snapshot = Snapshot(verdict, report, now, now_mono, self.runs_started, round(now_mono - began, 3))
        if verdict.get("status") == "healthy":
            self.last_success = now
        self.recent.append(history_entry(verdict))
        self.snapshot = snapshot  # the swap: one reference assignment
        if verdict.get("status") != previous or snapshot.run == 1:
            first = next((r for r in verdict.get("reasons") or [] if r.get("severity") != "info"), None)
            why = f": {first.get('code')}: {first.get('message')}" if first else ""
            log.warning("celery-probe: %s%s", str(verdict.get("status")).upper(), why)
        return snapshot


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's process group and reap it, within a bound."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(asyncio.TimeoutError, ProcessLookupError):
        await asyncio.wait_for(proc.wait(), REAP_TIMEOUT)
