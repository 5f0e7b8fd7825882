"""``celery-probe report --html``: write the status page of a report directory.

Reads ``history.jsonl`` (and its rotated files when the last N runs reach back into
them), ``verdict.json`` and ``latest.json``; renders with :mod:`celery_probe.present.status_page`;
writes ``index.html`` by temp file and rename, so a web server publishing the folder never
serves half a page. Exit codes: 0 written; 64 the report directory is missing, holds no
reports, or cannot be read, or a bad option; 73 the page cannot be written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from celery_probe.errors import ProbeUsageError, ReportWriteError

INDEX = "index.html"
DEFAULT_RUNS = 100
MAX_RUNS = 10_000


@dataclass(frozen=True)
class PageInputs:
    """What a status page is made of, as read from one report directory."""

    history: Any  # celery_probe.storage.history.History
    verdict: Mapping[str, Any] | None
    report: Any
    notes: tuple[str, ...]


def parse_runs(raw: str, source: str = "--runs") -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ProbeUsageError(f"invalid runs {raw!r}: is not a whole number (from {source})") from None
    if not 1 <= value <= MAX_RUNS:
        raise ProbeUsageError(f"invalid runs {raw!r}: must be between 1 and {MAX_RUNS} (from {source})")
    return value


def read_inputs(folder: Path, *, runs: int, where: str) -> PageInputs:
    """The history, verdict and report of ``folder``; a missing or unreadable one is one line (exit 64).

    A verdict or report file that is corrupt does not stop the page: it becomes a note on
    it, and the newest history line stands in for the verdict.
    """
    from celery_probe.storage.reports import HISTORY, LATEST, VERDICT, load_report
    from celery_probe.storage.history import read_history

    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise ProbeUsageError(f"report directory {folder} {what} (from {where})")
    if not any((folder / name).exists() for name in (HISTORY, f"{HISTORY}.1", VERDICT)):
        raise ProbeUsageError(f"report directory {folder} holds no {HISTORY} or {VERDICT}: "
                              f"run 'celery-probe run --report-dir {folder}' first (from {where})")
    try:
        history = read_history(folder, runs=runs)
    except OSError as exc:
        raise ProbeUsageError(f"cannot read the history in {folder}: {exc.strerror or exc} (from {where})") from None
    notes: list[str] = []
    verdict: Mapping[str, Any] | None = None
    if (folder / VERDICT).exists():
        document, problem = load_report(folder / VERDICT)
        if problem is not None:
            notes.append(f"{problem.replace('report', 'verdict', 1)}; the newest history line is shown instead")
        elif not isinstance(document, Mapping) or not isinstance(document.get("status"), str):
            notes.append(f"{folder / VERDICT} holds no verdict; the newest history line is shown instead")
        else:
            verdict = document
    report = None
    if (folder / LATEST).exists():
        report, problem = load_report(folder / LATEST)
        if problem is not None:
            notes.append(problem)
            report = None
    return PageInputs(history, verdict, report, tuple(notes))


def write_status_page(folder: Path, output: Path, *, runs: int, where: str,
                      now: datetime | None = None) -> PageInputs:
    """Read ``folder``, render its page and write it to ``output`` atomically."""
    from celery_probe.storage.reports import atomic_write_text
    from celery_probe.present.status_page import render_status_page

    inputs = read_inputs(folder, runs=runs, where=where)
    page = render_status_page(inputs.history, inputs.verdict, inputs.report,
                              now=now or datetime.now(timezone.utc), runs=runs, notes=inputs.notes)
    try:
        atomic_write_text(output, page)
    except OSError as exc:
        raise ReportWriteError(f"cannot write the status page {output}: {exc.strerror or exc}") from None
    return inputs


@click.command()
@click.option("--html", "html", is_flag=True, help="Write the HTML status page (the only kind of report so far).")
@click.option("--report-dir", metavar="DIR", help="Where the runs wrote history.jsonl and verdict.json (default reports).")
@click.option("--runs", "runs_raw", default=str(DEFAULT_RUNS), show_default=True, metavar="N",
              help="Runs shown in the timeline and charts (the newest N).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Where to write the page (default REPORT_DIR/index.html).")
def report(html: bool, report_dir: str | None, runs_raw: str, output: Path | None) -> int:
    """Write a status page from a report directory: the current verdict and its reasons,
    a per-probe table, a status timeline, and round-trip and queue-length charts of the
    last N runs. One HTML file, inline CSS and SVG, no script: it works offline.
    """
    from celery_probe.config.settings import REMEDIATION, as_cli_overrides, resolve_settings

    if not html:
        raise ProbeUsageError("say which report to write: --html (from celery-probe report)")
    runs = parse_runs(runs_raw)
    settings = resolve_settings(as_cli_overrides(report_dir=report_dir), ignore=REMEDIATION)
    folder = settings.report_dir
    where = settings.sources.get("report_dir", "the default report directory")
    target = output or folder / INDEX
    inputs = write_status_page(folder, target, runs=runs, where=where)
    history = inputs.history
    skipped = f", {history.corrupt} unreadable history lines skipped" if history.corrupt else ""
    click.echo(f"celery-probe: wrote {target} ({len(history.runs)} run{'s' if len(history.runs) != 1 else ''}{skipped})", err=True)
    for note in inputs.notes:
        click.echo(f"celery-probe: note: {note}", err=True)
    return 0
