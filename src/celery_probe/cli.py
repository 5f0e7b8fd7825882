"""The ``celery-probe`` command.

Exit codes (documented in the README):

====  =====================================================================
0     healthy
2     down
3     degraded
4     unknown (no usable evidence)
64    usage or configuration error (bad option, setting, app path or URL)
73    the report directory cannot be written
130   interrupted
====  =====================================================================

With ``--format nagios`` the status codes follow the Nagios plugin convention instead
(0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from celery_probe import __version__
from celery_probe.deadline import Deadline
from celery_probe.errors import EXIT_INTERRUPTED, EXIT_USAGE, ProbeUsageError, ReportWriteError
from celery_probe.settings import FORMATS, Settings, as_cli_overrides, require_target, resolve_settings


def _target_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("-A", "--app", help="Celery app, MODULE[:ATTR] as for celery -A."),
        click.option("-b", "--broker", help="Broker URL (instead of, or overriding, the app's)."),
        click.option("--backend", help="Result backend URL, needed to confirm the round trip."),
        click.option("-Q", "--queue", "queues", multiple=True, help="Queue to watch (repeatable or comma-separated). Default: the app's queues, else celery."),
        click.option("--expect-workers", metavar="N", help="Workers that should answer ping; return as soon as N did."),
        click.option("--endpoint", "endpoints", multiple=True, metavar="URL", help="HTTP health URL to query (repeatable)."),
        click.option("--deadline", metavar="SECONDS", help="The whole run answers within this (default 5)."),
        click.option("--queue-threshold", multiple=True, metavar="N|QUEUE=N", help="Backlog at which a queue is high (default 100); QUEUE=N for one queue."),
        click.option("--roundtrip-slow", metavar="SECONDS", help="A round trip slower than this is degraded (default 1)."),
        click.option("--roundtrip-task", metavar="NAME", help="Task sent for the round trip (default celery.accumulate)."),
        click.option("--ping-window", metavar="SECONDS", help="Idle time to wait for more ping replies (default 0.3)."),
        click.option("--report-dir", metavar="DIR", help="Where latest.json, verdict.json and history.jsonl go (default reports)."),
        click.option("--format", "format_", metavar="|".join(FORMATS), help="Output: text (default), json or nagios."),
        click.option("--probes", "probes", multiple=True, metavar="PATH", help="Extra probe files or folders (repeatable)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _settings_from(raw: dict[str, Any]) -> Settings:
    return resolve_settings(
        as_cli_overrides(
            app=raw.get("app"),
            broker=raw.get("broker"),
            backend=raw.get("backend"),
            queues=tuple(raw.get("queues") or ()),
            expect_workers=raw.get("expect_workers"),
            endpoints=tuple(raw.get("endpoints") or ()),
            deadline=raw.get("deadline"),
            queue_threshold=tuple(raw.get("queue_threshold") or ()),
            roundtrip_slow=raw.get("roundtrip_slow"),
            roundtrip_task=raw.get("roundtrip_task"),
            ping_window=raw.get("ping_window"),
            report_dir=raw.get("report_dir"),
            format=raw.get("format_"),
            probes=tuple(raw.get("probes") or ()),
        )
    )


def emit(verdict: dict[str, Any], fmt: str, *, write: Callable[[str], None] | None = None) -> int:
    """Print ``verdict`` in ``fmt`` and return the exit code for it."""
    from celery_probe.render import nagios_exit_code, render_json, render_nagios, render_text, use_colour
    from celery_probe.verdict import exit_code

    out = write or click.echo
    status = str(verdict.get("status", "unknown"))
    if fmt == "json":
        out(render_json(verdict))
    elif fmt == "nagios":
        out(render_nagios(verdict))
        return nagios_exit_code(status)
    else:
        colour = use_colour(os.environ, sys.stdout.isatty())
        text = render_text(verdict, colour=colour)
        # click strips ANSI codes off non-terminals unless told otherwise (FORCE_COLOR).
        out(text) if write else click.echo(text, color=colour)
    return exit_code(status)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="celery-probe")
def cli() -> None:
    """Health checks for Celery: is Celery healthy right now, with evidence."""


@cli.command()
@_target_options
@click.option("-v", "--verbose", is_flag=True, help="Show pytest's own output on stderr.")
def run(verbose: bool, **raw: Any) -> int:
    """Run the probes against a Celery deployment and print the verdict.

    Writes REPORT_DIR/latest.json (the pytest-json-report report), REPORT_DIR/verdict.json
    and one line of REPORT_DIR/history.jsonl.
    """
    deadline_clock = Deadline(0.0)
    settings = _settings_from(raw)
    require_target(settings)
    from celery_probe.reports import check_report_dir

    check_report_dir(settings.report_dir)
    deadline = Deadline(settings.deadline)
    deadline.started = deadline_clock.started

    from celery_probe.runner import WATCHDOG_SLACK, Watchdog, run_probes
    from celery_probe.target import build_app

    with Watchdog(settings.deadline + WATCHDOG_SLACK, lambda: _give_up(settings)):
        app = build_app(settings)
        context = run_probes(settings, app, deadline, verbose=verbose)
    assert context.verdict is not None
    code = emit(context.verdict, settings.format)
    if context.write_error:
        raise ReportWriteError(context.write_error)
    return code


def _give_up(settings: Settings) -> None:
    """Watchdog expiry: write and print an ``unknown`` verdict, then end the process."""
    from celery_probe.reports import write_run_files
    from celery_probe.verdict import unknown_verdict

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
    # The main thread may have redirected sys.stdout; write to the real descriptor.
    lines: list[str] = []
    code = emit(verdict, settings.format, write=lines.append)
    os.write(1, ("\n".join(lines) + "\n").encode())
    os._exit(code)


@cli.command()
@click.argument("report", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "format_", metavar="|".join(FORMATS), help="Output: text (default), json or nagios.")
def verdict(report: Path, format_: str | None) -> int:
    """Map an existing pytest-json-report REPORT to a verdict (same output and exit codes)."""
    from celery_probe.reports import verdict_for_file

    settings = resolve_settings(as_cli_overrides(format=format_))
    result, _report = verdict_for_file(report)
    return emit(result, settings.format)


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the demo's report folder instead of removing it.")
def demo(keep: bool) -> int:
    """Start a throwaway broker and worker, probe them healthy, stop the worker, probe again."""
    from celery_probe.demo import run_demo

    return run_demo(keep=keep)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: map every operator mistake to one line and its exit code."""
    try:
        code = cli.main(args=argv, prog_name="celery-probe", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        hint = f" (see 'celery-probe {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.parent else ""
        click.echo(f"celery-probe: error: {exc.format_message()}{hint}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        sys.exit(EXIT_INTERRUPTED)
    except (ProbeUsageError, ReportWriteError) as exc:
        click.echo(f"celery-probe: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("celery-probe: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)
