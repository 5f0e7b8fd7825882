"""The background probe loop behind ``celery-probe serve``: one run at a time, out of process.

Why a separate process per run, as :mod:`celery_probe.run.child` does: the probes bound every
phase with ``SIGALRM``, which only works on a main thread, and a frozen broker can block a
kombu call; neither may touch the web server's event loop. So each run is ``python -m
celery_probe run --format json`` in a process of its own with a hard timeout (the deadline
plus :data:`~celery_probe.run.child.PROCESS_SLACK`); a run that overruns is killed with its
process group. Broker URLs, which may carry passwords, travel in the run's environment,
never on a command line where ``ps`` shows them.

Once the loop is started, those processes are forked from a resident server that has
imported pytest, Celery, kombu and redis-py once (:mod:`celery_probe.run.resident`), instead
of each starting an interpreter: the same run for a fraction of the CPU. Runs before that
server is ready, or while it is restarted, start a fresh process as before
(:mod:`celery_probe.run.runner`); both give the same verdict.

The loop keeps the latest :class:`Snapshot` and replaces it with one assignment when a run
ends, so a reader sees the old verdict or the new one, never a mix. Requests only read it:
the number of broker broadcasts depends on the interval, not on traffic
(:attr:`ProbeLoop.runs_started` counts them).

With a report folder, the loop starts from what its history records: the time of the last
run and of the last healthy one. So a restart (a deploy, a crash loop) does not blank
``celery_probe_last_success_timestamp_seconds`` until the next healthy run, which would
blind an alert on it exactly when it matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from celery_probe.config.settings import Settings
from celery_probe.run import runner
from celery_probe.run.child import (
    PROCESS_SLACK,
    check_round_trip,
    child_arguments,
    child_environment,
)
from celery_probe.run.runner import ProbeRunner, RunMode
from celery_probe.storage.history import read_last_times
from celery_probe.storage.reports import LATEST, history_entry, load_report
from celery_probe.verdict.mapper import unknown_verdict
from celery_probe.verdict.model import Verdict

log = logging.getLogger("celery_probe.serve")

REAP_TIMEOUT = runner.REAP_TIMEOUT  # seconds to reap a SIGKILLed run (the app's staleness bound counts it)
RECENT_RUNS = 100  # history entries kept in memory for the status page
QUEUED_SAY_EVERY = 600.0  # seconds between two log lines about runs queued for a slot


@dataclass(frozen=True)
class Snapshot:
    """One verdict as published: what it says, and when and by which run it was produced."""

    verdict: Verdict
    report: dict[str, Any] | None = None
    produced_at: float | None = None  # Unix time the run ended; None before the first run
    produced_mono: float | None = None  # the same instant on the monotonic clock, for ages
    run: int = 0  # number of the run that produced it; 0 before the first run ends
    took_s: float | None = None  # wall time of the run, process start-up included


class ProbeLoop:
    """Runs the probes every ``interval`` seconds (start to start) and keeps the latest verdict.

    ``report_dir`` is where runs write their files; None gives the loop a private temporary
    folder, emptied after each run and removed at :meth:`stop`, so a server running for months
    does not grow a history file. It is the same folder for every run, so every run of a target
    has the same command line and can be forked from one warm session (:mod:`celery_probe.run.warm`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        interval: float,
        report_dir: Path | None = None,
        python: str = sys.executable,
        runs: RunMode = RunMode(),
        runner: ProbeRunner | None = None,
    ) -> None:
        """``runs``: once started, fork runs from a resident server (see the module), or not.

        ``runner``: one shared with other loops (several targets, each with its own settings,
        through one resident server); its owner starts and closes it, not this loop.
        """
        check_round_trip(settings)
        self.settings = settings
        self.interval = interval
        self.report_dir = report_dir
        self.python = python
        self._owns_runner = runner is None
        self.runner = runner if runner is not None else ProbeRunner(python, mode=runs)
        self.hard_timeout = settings.deadline + PROCESS_SLACK
        self.snapshot = Snapshot(unknown_verdict(
            "no probe run has finished yet: the first one starts when the server does",
            code="celery_probe_no_evidence",
        ))
        self.runs_started = 0
        self.runs_killed = 0
        self.last_run: float | None = None  # Unix time the latest run ended
        self.last_success: float | None = None  # Unix time of the latest healthy verdict
        if report_dir is not None:
            self._restore(report_dir)
        # The history lines of the latest runs, for the status page when no report dir is kept.
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_RUNS)
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._scratch: Path | None = None  # the private folder when no report_dir is kept
        self._began = time.monotonic()  # when the latest run started (got its slot)
        self.queued_since: float | None = None  # when the run now waiting for a slot asked for one
        self._queued_said: float | None = None  # when a run's wait for a slot was last logged

    def _restore(self, report_dir: Path) -> None:
        """Take the last run and last success from the history of earlier runs (see the module).

        A history that cannot be read is no reason not to serve: the loop starts blank, and says so.
        """
        try:
            found = read_last_times(report_dir)
        except OSError as exc:
            log.warning("celery-probe: cannot read the history in %s (%s): last run and last success "
                        "start empty", report_dir, exc.strerror or exc)
            return
        self.last_run, self.last_success = found.run, found.success

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the loop (and the resident server) on the running event loop (idempotent)."""
        if not self.running:
            if self._owns_runner:
                self.runner.start()
            self._task = asyncio.get_running_loop().create_task(self._forever(), name="celery-probe loop")

    async def stop(self) -> None:
        """Stop the loop, kill a run in progress (its process group included), stop the resident server."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._owns_runner:
            await self.runner.close()
        scratch, self._scratch = self._scratch, None
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    async def _forever(self) -> None:
        while True:
            self._began = time.monotonic()  # moved on by run_once when the run gets its slot
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bug here must not end the loop, nor stay silent
                log.error("celery-probe: probe loop error: %s: %s", type(exc).__name__, exc)
                self._publish(unknown_verdict(f"the probe loop failed: {type(exc).__name__}: {exc}",
                                              code="celery_probe_error"), None, self._began)
            # The next run is due an interval after this one started, not after it was due: runs
            # that queued for a slot keep the times they got, and so spread over the interval.
            await asyncio.sleep(max(0.0, self._began + self.interval - time.monotonic()))

    # ------------------------------------------------------------------ one run

    async def run_once(self) -> Snapshot:
        """Run the probes once in a child process and publish the verdict. One run at a time."""
        async with self._lock:
            asked = self.queued_since = time.monotonic()
            try:
                async with self.runner.slots.hold():  # not started yet: its deadline starts after
                    self.queued_since = None
                    began = self._began = time.monotonic()
                    self._say_if_queued(began - asked)
                    folder = self.report_dir or self._scratch_folder()
                    try:
                        verdict, report = await self._child_run(folder)
                    finally:
                        if self.report_dir is None:
                            _empty(folder)
                    return self._publish(verdict, report, began)
            finally:
                self.queued_since = None  # also when cancelled while waiting

    def _say_if_queued(self, waited: float) -> None:
        """Log (every :data:`QUEUED_SAY_EVERY` s at most) a run that waited an interval for a slot:
        serve has more targets than it runs in their intervals, and their verdicts grow old."""
        if waited < self.interval:
            return
        now = time.monotonic()
        if self._queued_said is not None and now - self._queued_said < QUEUED_SAY_EVERY:
            return
        self._queued_said = now
        log.warning("celery-probe: a probe run waited %.1fs for one of serve's %d run slots (its interval "
                    "is %gs): more runs are due than fit; raise --runs-at-once or the intervals",
                    waited, self.runner.slots.size, self.interval)

    def _scratch_folder(self) -> Path:
        if self._scratch is None or not self._scratch.is_dir():
            self._scratch = Path(tempfile.mkdtemp(prefix="celery-probe-serve-"))
        return self._scratch

    async def _child_run(self, folder: Path) -> tuple[Verdict, dict[str, Any] | None]:
        self.runs_started += 1
        outcome = await self.runner.run(child_arguments(folder), child_environment(self.settings),
                                        self.hard_timeout)
        if outcome.timed_out:
            self.runs_killed += 1
            return unknown_verdict(
                f"the probe process did not finish within {self.hard_timeout:g}s and was killed",
                code="celery_probe_deadline_exceeded",
            ), None
        try:
            verdict = json.loads(outcome.stdout)
        except ValueError:
            lines = outcome.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
            return unknown_verdict(f"the probe process failed (exit {outcome.returncode}): {lines[-1]}",
                                   code="celery_probe_error"), None
        if not isinstance(verdict, dict) or "status" not in verdict:
            return unknown_verdict("the probe process printed no verdict", code="celery_probe_error"), None
        report, _problem = await asyncio.to_thread(load_report, folder / LATEST)
        return cast(Verdict, verdict), report if isinstance(report, dict) else None  # the child's mapper wrote it

    def _publish(self, verdict: Verdict, report: dict[str, Any] | None, began: float) -> Snapshot:
        now_mono, now = time.monotonic(), time.time()
        previous = self.snapshot.verdict.get("status")
        snapshot = Snapshot(verdict, report, now, now_mono, self.runs_started, round(now_mono - began, 3))
        self.last_run = now
        if verdict.get("status") == "healthy":
            self.last_success = now
        self.recent.append(history_entry(verdict))
        self.snapshot = snapshot  # the swap: one reference assignment
        if verdict.get("status") != previous or snapshot.run == 1:
            first = next((r for r in verdict.get("reasons") or [] if r.get("severity") != "info"), None)
            why = f": {first.get('code')}: {first.get('message')}" if first else ""
            log.warning("celery-probe: %s%s", str(verdict.get("status")).upper(), why)
        return snapshot


def _empty(folder: Path) -> None:
    """Remove what a run left in ``folder``, keeping the folder itself."""
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()
