"""The status page: one self-contained HTML document from the history, the verdict and the report.

Pure: :func:`render_status_page` takes what was read (by ``celery-probe report --html`` or
by ``serve``) and the time to print, and returns a string. The page has inline CSS and
inline SVG, no script and no URL of any kind, so it opens from a file, offline, behind any
proxy. Everything that comes from a report (reason messages, queue, worker and target
names) is untrusted and HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape
from typing import Any

from celery_probe.numbers import number
from celery_probe.storage.history import Figures, History, HistoryEntry
from celery_probe.present.charts import (
    STATUS_COLOURS,
    Series,
    line_chart_svg,
    series_chart_svg,
    timeline_svg,
)

MAX_PROBES = 500
MAX_REASONS = 200
MAX_TARGETS = 50
MAX_SERIES = 12  # targets drawn on the round-trip and queue charts; more would be unreadable
SINGLE = "single target"  # the series of runs made without --targets, in a history that has both

CSS = """
:root { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1c1c1c; }
body { margin: 0 auto; max-width: 1000px; padding: 16px 20px 40px; background: #fafafa; }
h1 { font-size: 1.4rem; margin: 0 0 4px; } h2 { font-size: 1.1rem; margin: 28px 0 8px; }
.meta, .note { color: #555; font-size: .9rem; margin: 2px 0; }
.banner { border-radius: 8px; padding: 14px 18px; color: #fff; margin: 12px 0; }
.banner .status { font-size: 2rem; font-weight: 700; text-transform: uppercase; letter-spacing: .04em; }
.status-healthy { background: #2e7d32; } .status-degraded { background: #e6a100; color: #1c1c1c; }
.status-down { background: #c62828; } .status-unknown { background: #78909c; }
.figures { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0; }
.figure { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; min-width: 120px; }
.figure b { display: block; font-size: 1.2rem; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pill { border-radius: 10px; padding: 0 8px; color: #fff; white-space: nowrap; }
.pill.status-degraded { color: #1c1c1c; }
.warn { background: #fff4e5; border: 1px solid #e6a100; border-radius: 6px; padding: 8px 12px; }
svg.chart { display: block; background: #fff; border: 1px solid #ddd; border-radius: 6px; }
svg .row-label, svg .axis { font-size: 12px; fill: #555; }
svg .grid { stroke: #e5e5e5; } svg .line { fill: none; stroke: #1565c0; stroke-width: 2; }
svg .point { fill: #1565c0; } svg .gap { stroke: #c62828; stroke-width: 2; fill: none; }
code { font-size: .85rem; word-break: break-all; }
"""


@dataclass(frozen=True)
class ProbeRow:
    """One probe of the latest report, as the per-probe table shows it."""

    probe: str
    target: str | None
    outcome: str
    severity: str | None
    code: str | None
    title: str | None
    duration_ms: float | None
    message: str | None


def probe_rows(report: Any, verdict: Mapping[str, Any] | None) -> list[ProbeRow]:
    """The probes of a pytest-json-report report, with the verdict's message for each failure."""
    if not isinstance(report, Mapping) or not isinstance(report.get("tests"), list):
        return []
    messages: dict[str, str] = {}
    for reason in _reasons(verdict):
        if isinstance(reason.get("probe"), str) and reason.get("severity") != "info":
            messages.setdefault(reason["probe"], str(reason.get("message") or ""))
    rows = []
    for test in report["tests"][:MAX_PROBES]:
        if not isinstance(test, Mapping):
            continue
        metadata = test.get("metadata") if isinstance(test.get("metadata"), Mapping) else {}
        probe = metadata.get("probe") if isinstance(metadata.get("probe"), Mapping) else {}
        seconds = [stage.get("duration") for stage in (test.get(k) for k in ("setup", "call", "teardown"))
                   if isinstance(stage, Mapping) and isinstance(stage.get("duration"), (int, float))]
        nodeid = _str(test.get("nodeid")) or "?"
        rows.append(ProbeRow(
            probe=nodeid,
            target=_str(probe.get("target")),
            outcome=_str(test.get("outcome")) or "unknown",
            severity=_str(probe.get("severity")),
            code=_str(probe.get("code")),
            title=_str(probe.get("title")),
            duration_ms=round(sum(seconds) * 1000, 1) if seconds else None,
            message=messages.get(nodeid),
        ))
    return rows


def render_status_page(
    history: History,
    verdict: Mapping[str, Any] | None,
    report: Any = None,
    *,
    now: datetime,
    runs: int,
    notes: Sequence[str] = (),
    refresh_s: int | None = None,
) -> str:
    """The whole page. ``verdict`` is the current one (None: the newest history line stands in).

    ``notes`` are problems met while reading (an unreadable verdict file…), shown at the top;
    ``refresh_s`` adds a ``<meta http-equiv="refresh">`` (for ``serve``; files need none).
    """
    latest_run = history.runs[-1] if history.runs else None
    status = _status_of(verdict, latest_run)
    notes = list(notes)
    if history.corrupt:
        notes.append(f"{history.corrupt} line{'s' if history.corrupt != 1 else ''} of history could not be "
                     "read and were skipped")
    generated = now.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        *([f'<meta http-equiv="refresh" content="{int(refresh_s)}">'] if refresh_s else []),
        f"<title>Celery {escape(status)} - celery-probe status</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
    ]
    body = [
        "<header>",
        "<h1>Celery status</h1>",
        (f'<p class="meta">Page generated <time datetime="{escape(generated)}">{escape(generated)}</time> '
        f"by celery-probe from the last {len(history.runs)} of at most {runs} runs.</p>"),
        "</header>",
        "<main>",
        *_current(verdict, latest_run, status),
        *_notes(notes),
        *_reasons_section(verdict),
        *_targets_section(verdict),
        *_charts(history.runs),
        *_probes_section(probe_rows(report, verdict) if report is not None else None),
        *_actions_section(history),
        *_runs_table(history.runs),
        "</main>",
        "</body>",
        "</html>",
    ]
    return "\n".join(head + body) + "\n"


# ----------------------------------------------------------------------------- sections


def _status_of(verdict: Mapping[str, Any] | None, latest: HistoryEntry | None) -> str:
    status = verdict.get("status") if isinstance(verdict, Mapping) else (latest.status if latest else None)
    return status if status in STATUS_COLOURS else "unknown"


def _current(verdict: Mapping[str, Any] | None, latest: HistoryEntry | None, status: str) -> list[str]:
    source = verdict if isinstance(verdict, Mapping) else None
    checked = _str(source.get("checked_at")) if source else (latest.checked_at if latest else None)
    target = _str(source.get("target")) if source else None
    if source is None and latest is None:
        summary = "No probe run recorded yet."
    elif source is None:
        summary = "From the newest history line (no verdict file)."
    else:
        summary = f"Checked {_when(checked)}" + (f" on {target}" if target else "") + "."
    parts = [
        f'<section aria-label="Current verdict" id="verdict" class="banner status-{status}" data-status="{status}">',
        f'<div class="status">{escape(status)}</div>',
        f"<div>{escape(summary)}</div>",
        "</section>",
    ]
    figures: list[tuple[str, str]] = []
    if source is not None and not isinstance(source.get("targets"), Mapping):
        workers = source.get("workers")
        figures = [
            ("Workers answering", str(len(workers)) if isinstance(workers, Mapping) else "-"),
            ("Queue length", _num(source.get("queue_length"))),
            ("Round trip", _num(source.get("roundtrip_ms"), " ms")),
            ("Run took", _num(source.get("duration_s"), " s")),
        ]
    elif latest is not None and source is None:
        figures = [("Workers answering", _num(latest.workers)), ("Queue length", _num(latest.queue_length)),
                   ("Round trip", _num(latest.roundtrip_ms, " ms"))]
    if figures:
        parts.append('<div class="figures">')
        parts += [f'<div class="figure">{escape(label)}<b>{escape(value)}</b></div>' for label, value in figures]
        parts.append("</div>")
    return parts


def _notes(notes: Sequence[str]) -> list[str]:
    if not notes:
        return []
    return ['<div class="warn" role="note" id="notes">', *[f"<p>{escape(n)}</p>" for n in notes], "</div>"]


def _reasons_section(verdict: Mapping[str, Any] | None) -> list[str]:
    reasons = _reasons(verdict)[:MAX_REASONS]
    parts = ['<section id="reasons"><h2>Reasons</h2>']
    if not reasons:
        parts.append('<p class="note">None: every probe passed.</p>' if verdict else
                     '<p class="note">No verdict to explain.</p>')
        return parts + ["</section>"]
    with_target = any("target" in r for r in reasons)
    parts.append("<table><thead><tr><th>Severity</th><th>Code</th>" + ("<th>Target</th>" if with_target else "")
                 + "<th>Probe</th><th>Message</th></tr></thead><tbody>")
    for reason in reasons:
        parts.append(
            f'<tr class="reason severity-{escape(str(reason.get("severity")))}"><td>{_e(reason.get("severity"))}</td>'
            f"<td><code>{_e(reason.get('code'))}</code></td>"
            + (f"<td>{_e(reason.get('target'))}</td>" if with_target else "")
            + f"<td><code>{_e(reason.get('probe'))}</code></td><td>{_e(reason.get('message'))}</td></tr>"
        )
    return parts + ["</tbody></table></section>"]


def _targets_section(verdict: Mapping[str, Any] | None) -> list[str]:
    targets = verdict.get("targets") if isinstance(verdict, Mapping) else None
    if not isinstance(targets, Mapping) or not targets:
        return []
    parts = [('<section id="targets"><h2>Targets</h2><table><thead><tr><th>Target</th><th>Status</th>'
             "<th>Workers</th><th>Queue length</th><th>Round trip</th><th>Checks</th></tr></thead><tbody>")]
    for name, part in list(targets.items())[:MAX_TARGETS]:
        part = part if isinstance(part, Mapping) else {}
        status = part.get("status") if part.get("status") in STATUS_COLOURS else "unknown"
        workers = part.get("workers")
        parts.append(
            f"<tr><td>{_e(name)}</td><td>{_pill(status)}</td>"
            f'<td class="num">{len(workers) if isinstance(workers, Mapping) else "-"}</td>'
            f'<td class="num">{escape(_num(part.get("queue_length")))}</td>'
            f'<td class="num">{escape(_num(part.get("roundtrip_ms"), " ms"))}</td><td>{_e(part.get("target"))}</td></tr>'
        )
    return parts + ["</tbody></table></section>"]


def _charts(runs: Sequence[HistoryEntry]) -> list[str]:
    labels = [_label(run, i) for i, run in enumerate(runs)]
    rows: list[tuple[str, Sequence[str | None]]] = [("overall", [run.status for run in runs])]
    names = list(dict.fromkeys(name for run in runs for name, _status in run.targets))[:MAX_TARGETS]
    for name in names:
        rows.append((name, [dict(run.targets).get(name) for run in runs]))
    if names:
        return [*_timeline(rows, labels), *_target_charts(runs, labels)]
    return [
        *_timeline(rows, labels),
        '<section id="roundtrip"><h2>Round-trip latency</h2>',
        line_chart_svg("roundtrip-chart", "Round-trip latency", "ms", [r.roundtrip_ms for r in runs], labels,
                       missing="no round trip completed"),
        "</section>",
        '<section id="queue"><h2>Queue length</h2>',
        line_chart_svg("queue-chart", "Queue length", "messages",
                       [None if r.queue_length is None else float(r.queue_length) for r in runs], labels,
                       missing="queue length not measured"),
        "</section>",
    ]


def _timeline(rows: list[tuple[str, Sequence[str | None]]], labels: list[str]) -> list[str]:
    return [
        '<section id="timeline"><h2>Status timeline</h2>',
        timeline_svg("timeline-chart", rows, labels),
        '<p class="note">' + " ".join(
            f'<span class="pill status-{s}">{s}</span>' for s in STATUS_COLOURS) + "</p>",
        "</section>",
    ]


def _target_charts(runs: Sequence[HistoryEntry], labels: list[str]) -> list[str]:
    """Round-trip and queue charts of a history with several targets: one line per target.

    The targets of the newest run come first, then the others, newest first; past
    ``MAX_SERIES`` they are named in a note, not drawn. Runs made without ``--targets``
    among them are a series of their own; runs recorded before per-target figures were
    kept leave every target empty, and a note counts them.
    """
    names = list(dict.fromkeys(name for run in reversed(runs) for name, _status in run.targets))
    single = [None if run.targets else (run.roundtrip_ms, run.queue_length) for run in runs]
    with_single = any(pair is not None and pair != (None, None) for pair in single)
    drawn = names[:MAX_SERIES - 1] if with_single else names[:MAX_SERIES]
    left_out = names[len(drawn):]
    figures = [dict(run.target_figures) for run in runs]

    def series(pick: str) -> list[Series]:
        lines = [Series(name, [_figure(f.get(name), pick) for f in figures], [name in f for f in figures])
                 for name in drawn]
        if with_single:
            lines.append(Series(SINGLE, [_figure(Figures(*pair), pick) if pair else None for pair in single],
                                [pair is not None for pair in single]))
        return lines

    notes = []
    if left_out:
        shown = ", ".join(left_out[:20]) + (", …" if len(left_out) > 20 else "")
        notes.append(f"{len(left_out)} more target{'s are' if len(left_out) != 1 else ' is'} not drawn on the "
                     f"charts (at most {MAX_SERIES} lines each): {shown}. The table of runs has their figures.")
    older = sum(1 for run in runs if run.targets and not run.target_figures)
    if older:
        notes.append(f"{older} run{'s were' if older != 1 else ' was'} recorded without per-target figures "
                     "(by an older celery-probe) and left empty on the charts.")
    return [
        *[f'<p class="note" id="series-note-{i}">{escape(note)}</p>' for i, note in enumerate(notes)],
        '<section id="roundtrip"><h2>Round-trip latency</h2>',
        series_chart_svg("roundtrip-chart", "Round-trip latency", "ms", series("roundtrip_ms"), labels,
                         missing="no round trip completed", left_out=len(left_out)),
        "</section>",
        '<section id="queue"><h2>Queue length</h2>',
        series_chart_svg("queue-chart", "Queue length", "messages", series("queue_length"), labels,
                         missing="queue length not measured", left_out=len(left_out)),
        "</section>",
    ]


def _figure(figures: Figures | None, pick: str) -> float | None:
    value = getattr(figures, pick) if figures is not None else None
    return None if value is None else float(value)


def _probes_section(rows: list[ProbeRow] | None) -> list[str]:
    parts = ['<section id="probes"><h2>Probes of the latest run</h2>']
    if rows is None:
        return parts + ['<p class="note">No report of the latest run (latest.json) to list probes from.</p>',
                        "</section>"]
    if not rows:
        return parts + ['<p class="note">The latest report lists no probe.</p>', "</section>"]
    with_target = any(row.target for row in rows)
    parts.append("<table><thead><tr><th>Probe</th>" + ("<th>Target</th>" if with_target else "")
                 + "<th>Outcome</th><th>Severity</th><th>Code</th><th>Time</th><th>Message</th></tr></thead><tbody>")
    for row in rows:
        title = f' title="{escape(row.title)}"' if row.title else ""
        parts.append(
            f'<tr class="probe outcome-{escape(row.outcome)}"><td{title}><code>{escape(row.probe)}</code></td>'
            + (f"<td>{_e(row.target)}</td>" if with_target else "")
            + f"<td>{escape(row.outcome)}</td><td>{_e(row.severity)}</td><td><code>{_e(row.code)}</code></td>"
            f'<td class="num">{escape(_num(row.duration_ms, " ms"))}</td><td>{_e(row.message)}</td></tr>'
        )
    return parts + ["</tbody></table></section>"]


def _actions_section(history: History) -> list[str]:
    if not history.actions:
        return []
    parts = [('<section id="actions"><h2>Actions</h2><table><thead><tr><th>When</th><th>Action</th>'
             "<th>Target</th><th>Outcome</th><th>Message</th></tr></thead><tbody>")]
    for action in reversed(history.actions):  # newest first
        parts.append(f"<tr><td>{_e(_when(action.at))}</td><td>{_e(action.action)}</td><td>{_e(action.target)}</td>"
                     f"<td>{_e(action.outcome)}</td><td>{_e(action.message)}</td></tr>")
    return parts + ["</tbody></table></section>"]


def _runs_table(runs: Sequence[HistoryEntry]) -> list[str]:
    """The charts' data as text: for screen readers, text browsers and copying figures."""
    parts = [f'<details id="runs"><summary>The {len(runs)} runs as a table (newest first)</summary>',
             ("<table><thead><tr><th>Checked</th><th>Status</th><th>Round trip</th><th>Queue length</th>"
             "<th>Workers</th><th>Codes</th></tr></thead><tbody>")]
    for i in range(len(runs) - 1, -1, -1):
        run = runs[i]
        statuses = run.status + "".join(f"; {name}: {s}" for name, s in run.targets)
        if run.target_figures:  # one figure per target, as the charts draw them
            trip, queue, workers = (
                "; ".join(f"{name}: {_num(getattr(f, pick), unit)}" for name, f in run.target_figures)
                for pick, unit in (("roundtrip_ms", " ms"), ("queue_length", ""), ("workers", "")))
        else:
            trip, queue, workers = _num(run.roundtrip_ms, " ms"), _num(run.queue_length), _num(run.workers)
        parts.append(f"<tr><td>{escape(_label(run, i))}</td><td>{escape(statuses)}</td>"
                     f'<td class="num">{escape(trip)}</td>'
                     f'<td class="num">{escape(queue)}</td><td class="num">{escape(workers)}</td>'
                     f"<td>{escape(', '.join(run.codes))}</td></tr>")
    return parts + ["</tbody></table></details>"]


# ----------------------------------------------------------------------------- small helpers


def _reasons(verdict: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    reasons = verdict.get("reasons") if isinstance(verdict, Mapping) else None
    return [r for r in reasons if isinstance(r, Mapping)] if isinstance(reasons, list) else []


def _label(run: HistoryEntry, index: int) -> str:
    return _when(run.checked_at) if run.checked_at else f"run {index + 1} (no time)"


def _when(iso: str | None) -> str:
    if not iso:
        return "at an unknown time"
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if moment.tzinfo is not None else "")


def _num(value: Any, unit: str = "") -> str:
    value = number(value)
    if value is None:
        return "-"
    text = f"{value:.1f}" if isinstance(value, float) and value != int(value) else str(int(value))
    return text + unit


def _pill(status: str) -> str:
    return f'<span class="pill status-{escape(status)}">{escape(status)}</span>'


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _e(value: Any) -> str:
    return escape(str(value)) if value is not None else "-"
