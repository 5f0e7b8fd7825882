"""The life of one ``celery-probe run``, from the probe session to its last side effect.

Both ways of running (one target in-process, or ``--targets`` over xdist workers) live the
same life, in :func:`live`:

1. the report folder is checked before anything is probed;
2. the probe session runs under a :class:`~celery_probe.run.in_process.Watchdog` which, if
   the session overruns, prints an ``unknown`` verdict on a copy of file descriptor 1 taken
   beforehand (pytest has pointed descriptor 1 at its capture file while a probe runs) and
   ends the process;
3. the verdict is printed, then the extra outputs are written and the CI gate applied
   (:mod:`~celery_probe.run.outputs`), the alerts sent and ``--on-down`` acted on, each
   also when the report files could not be written, and none of them changing the exit
   code, which answers "is Celery healthy";
4. a report folder that could not be written is raised last (exit 73; under Nagios, 3 with
   its UNKNOWN line printed first, the verdict after it as long output).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from celery_probe.config.settings import Settings
from celery_probe.errors import AppLoadError, ReportWriteError
from celery_probe.present.emit import emit
from celery_probe.probing.deadline import Deadline

if TYPE_CHECKING:
    from celery_probe.pytest_plugin.session_state import ProbeSession


def run_one_target(settings: Settings, deadline: Deadline, options: Mapping[str, Any], *, verbose: bool) -> int:
    """Probe one target in this process; the exit code of the run.

    ``options`` holds the command's output, alert and remediation options (``junitxml``,
    ``prom_file``, ``fail_on``, ``alerting``, ``no_on_down``). An app whose own code or settings
    fail to load is a verdict (``unknown``), reported and alerted like any other.
    """
    from celery_probe.probing.app import build_app
    from celery_probe.run.in_process import WATCHDOG_SLACK, run_in_process

    def probe() -> ProbeSession:
        try:
            app, app_error = build_app(settings), None
        except AppLoadError as exc:  # the deployment's environment failed: a verdict
            app, app_error = None, exc
        return run_in_process(settings, app, deadline, verbose=verbose, junitxml=options.get("junitxml"),
                              app_error=app_error)

    return live(settings, probe, settings.deadline + WATCHDOG_SLACK, deadline, options,
                remediate=not options.get("no_on_down"))


def run_many_targets(settings: Settings, targets: dict[str, Settings], targets_file: Path,
                     overrides: dict[str, Any], options: Mapping[str, Any], *, parallel: int,
                     started: Deadline, verbose: bool) -> int:
    """Probe every target of a targets file over ``parallel`` workers; the exit code of the run.

    ``started`` began with the command: the watchdog's limit counts from there. ``--on-down``
    acts on a single target and is never run here.
    """
    from celery_probe.run.in_process import run_targets, targets_watchdog_seconds

    limit = targets_watchdog_seconds(targets, parallel)

    def probe() -> ProbeSession:
        return run_targets(settings, targets, targets_file, overrides, parallel=parallel,
                           verbose=verbose, junitxml=options.get("junitxml"))

    return live(settings, probe, limit, Deadline(limit, since=started), options, remediate=False)


def live(settings: Settings, probe: Callable[[], ProbeSession], watchdog_seconds: float,
         deadline: Deadline, options: Mapping[str, Any], *, remediate: bool) -> int:
    """Run ``probe`` under the watchdog, then print, write, alert and remediate (see the module)."""
    from celery_probe.alerting.options import send_alerts
    from celery_probe.run.in_process import Watchdog
    from celery_probe.run.outputs import finish_outputs
    from celery_probe.storage.reports import check_report_dir

    check_report_dir(settings.report_dir)
    stdout = os.dup(1)  # pytest captures fd 1 during probes; the watchdog must reach the real one
    try:
        with Watchdog(watchdog_seconds, lambda: give_up(settings, stdout, deadline)):
            session = probe()
    finally:
        os.close(stdout)
    assert session.verdict is not None
    nagios_unknown = bool(session.write_error) and settings.format == "nagios"
    if nagios_unknown:  # the status line Nagios reads; the verdict follows as long output
        from celery_probe.present.text import nagios_error_line

        click.echo(nagios_error_line("report folder", str(session.write_error)))
    code = emit(session.verdict, settings.format)
    output_error: ReportWriteError | None = None
    try:
        code = finish_outputs(session, code, dict(options))  # JUnit, textfile, CI gate
    except ReportWriteError as error:  # told after the alerts: an unwritable file must not silence them
        output_error = error
    send_alerts(session.verdict, options.get("alerting"))
    if remediate:
        _remediate(settings, session)
    if output_error is not None:
        raise output_error
    if session.write_error:
        raise ReportWriteError(session.write_error, status_line_shown=nagios_unknown)
    return code


def _remediate(settings: Settings, session: ProbeSession) -> None:
    """``--on-down``: one line on stdout in text format, on stderr otherwise (JSON stays pure)."""
    if not settings.on_down or session.verdict is None:
        return
    from celery_probe.remediation.apply import remediate

    outcome = remediate(settings, session.verdict, session.secrets())
    if outcome.line:
        click.echo(outcome.line, err=settings.format != "text")


def give_up(settings: Settings, stdout: int, deadline: Deadline) -> None:
    """Watchdog expiry: write and print an ``unknown`` verdict, then end the process.

    ``stdout`` is a copy of file descriptor 1 taken before the probe session: while a probe
    runs, pytest has pointed descriptor 1 at its capture file, which nobody would read.
    When the run spent a large part of its deadline waiting for a CPU, that is the reason
    given (``celery_probe_starved``): a busy host, not a silent Celery.
    """
    from celery_probe.storage.reports import write_run_files
    from celery_probe.verdict.mapper import STARVED_CODE, unknown_verdict

    if deadline.starved_run():
        verdict = unknown_verdict(
            f"no verdict within the {settings.deadline:g}s deadline: "
            + deadline.starvation("the probes could not finish in time"),
            code=STARVED_CODE,
        )
    else:
        verdict = unknown_verdict(
            f"no verdict within the {settings.deadline:g}s deadline: a probe or the app import "
            "did not return and could not be interrupted",
            code="celery_probe_deadline_exceeded",
        )
    verdict["target"] = settings.describe_target()
    try:
        write_run_files(settings.report_dir, None, verdict)
    except Exception:
        pass
    # The main thread may have redirected sys.stdout and pytest descriptor 1: use the copy.
    lines: list[str] = []
    code = emit(verdict, settings.format, write=lines.append)
    os.write(stdout, ("\n".join(lines) + "\n").encode())
    os._exit(code)
