"""Printing a verdict: colour-coded text, JSON, or one Nagios plugin line. Pure functions."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click

from celery_probe.verdict.mapper import is_consequence
from celery_probe.verdict.model import AnyVerdict, TargetsVerdict, is_targets_verdict

STATUS_COLOURS = {"healthy": "green", "degraded": "yellow", "down": "red", "unknown": "magenta"}
NAGIOS_STATES = {"healthy": (0, "OK"), "degraded": (1, "WARNING"), "down": (2, "CRITICAL"), "unknown": (3, "UNKNOWN")}


def use_colour(environ: Mapping[str, str], is_tty: bool) -> bool:
    """``NO_COLOR`` (any non-empty value) wins, then ``FORCE_COLOR``, then "is a terminal"."""
    if environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR"):
        return True
    return is_tty


def render_json(verdict: AnyVerdict) -> str:
    return json.dumps(verdict, indent=2, default=str)


def _ms(value: Any) -> str:
    return f"{value:.1f} ms" if isinstance(value, (int, float)) else "n/a"


def render_text(verdict: AnyVerdict, *, colour: bool) -> str:
    if is_targets_verdict(verdict):
        return _render_targets_text(verdict, colour=colour)
    status = str(verdict.get("status", "unknown"))

    def paint(text: str, fg: str | None = None, bold: bool = False) -> str:
        return click.style(text, fg=fg, bold=bold) if colour else text

    head = paint(status.upper(), STATUS_COLOURS.get(status), bold=True)
    target = verdict.get("target") or ""
    duration = verdict.get("duration_s")
    took = f" in {duration:.2f}s" if isinstance(duration, (int, float)) else ""
    lines = [f"celery-probe: {head}  {target}{took}".rstrip()]

    workers = verdict.get("workers") or {}
    alive = [n for n, w in workers.items() if w.get("last_heartbeat")]
    if workers:
        detail = ", ".join(f"{name} {_ms(workers[name].get('latency_ms'))}" for name in alive[:5])
        more = f" (+{len(alive) - 5})" if len(alive) > 5 else ""
        lines.append(f"  workers    {len(alive)} answered: {detail}{more}")
    else:
        lines.append("  workers    none answered")
    counts = [
        f"{label} {verdict.get(key)}"
        for label, key in (("active", "active_tasks"), ("reserved", "reserved_tasks"), ("scheduled", "scheduled_tasks"))
        if verdict.get(key) is not None
    ]
    if counts:
        lines.append(f"  tasks      {'  '.join(counts)}")
    queues = verdict.get("queues") or {}
    if queues:
        shown = [
            f"{name}={q.get('length') if q.get('length') is not None else '?'}"
            + (f" ({q.get('consumers')} consumers)" if q.get("consumers") is not None else "")
            for name, q in list(queues.items())[:8]
        ]
        more = f" (+{len(queues) - 8} more)" if len(queues) > 8 else ""
        lines.append(f"  queues     {', '.join(shown)}{more}  total {verdict.get('queue_length')}")
    if verdict.get("roundtrip_ms") is not None:
        lines.append(f"  roundtrip  {_ms(verdict.get('roundtrip_ms'))} (slowest queue)")
    lines.extend(_sla_lines(queues, verdict.get("task_runtimes")))
    beat = verdict.get("beat")
    if isinstance(beat, Mapping):
        age, every = beat.get("last_tick_age_s"), beat.get("interval_s")
        when = f"last tick {age:.1f}s ago" if isinstance(age, (int, float)) else (
            "no tick recorded" if beat.get("store") else "not checked"
        )
        lines.append(f"  beat       {when}" + (f" (every {every:g}s)" if isinstance(every, (int, float)) else ""))
    links = verdict.get("links")
    if isinstance(links, Mapping) and links.get("flower"):
        lines.append(f"  flower     {links['flower']}")
    reasons = [r for r in verdict.get("reasons") or [] if isinstance(r, Mapping)]
    consequences = [r for r in reasons if is_consequence(r)]
    for reason in reasons:
        if reason in consequences:
            continue
        severity = str(reason.get("severity"))
        mark = {"critical": "✗", "degraded": "!", "error": "?", "info": "i"}.get(severity, "-")
        fg = {"critical": "red", "degraded": "yellow", "error": "magenta"}.get(severity)
        lines.append(paint(f"  {mark} {reason.get('code')} [{severity}]: {reason.get('message')}", fg))
        if reason.get("link"):
            lines.append(f"      see {reason['link']}")
    if consequences:
        codes = ", ".join(sorted({str(r.get("code")) for r in consequences}))
        lines.append(f"  … not attempted because of the above: {codes}")
    return "\n".join(lines)


def _sla_lines(queues: Mapping[str, Any], runtimes: Any) -> list[str]:
    """Round trips against queue SLAs, then task runtimes per type from the events window."""
    lines = []
    judged = [(name, q) for name, q in queues.items() if isinstance(q, Mapping) and q.get("sla_ms") is not None]
    if judged:
        shown = [f"{name} {_ms(q.get('roundtrip_ms'))} of {q['sla_ms']:g} ms" + (" (over)" if q.get("sla_breach") else "")
                 for name, q in judged[:8]]
        lines.append(f"  sla        {', '.join(shown)}")
    if isinstance(runtimes, Mapping) and isinstance(runtimes.get("tasks"), Mapping):
        tasks = runtimes["tasks"]
        window = runtimes.get("window_s")
        head = f"  runtimes   {len(tasks)} task types in {window:.1f}s" if isinstance(window, (int, float)) else "  runtimes"
        lines.append(head + ("" if tasks else " (no task events)"))
        for name, t in list(tasks.items())[:8]:
            sla = f", SLA {t['sla_ms']:g} ms" + (" (over)" if t.get("breach") else "") if t.get("sla_ms") is not None else ""
            lines.append(f"    {name} x{t.get('count')}: p50 {_ms(t.get('p50_ms'))}, p95 {_ms(t.get('p95_ms'))}, "
                         f"max {_ms(t.get('max_ms'))}{sla}" + (f", {t['failed']} failed" if t.get("failed") else ""))
    return lines


def nagios_exit_code(status: str) -> int:
    return NAGIOS_STATES.get(status, NAGIOS_STATES["unknown"])[0]


def nagios_text(text: str) -> str:
    """``text`` made safe for one line of plugin output, unchanged by Nagios.

    ``|`` would start the perfdata and a newline the long output; Nagios Core rewrites
    every ``;`` of plugin output as ``:``, so none is left for it to rewrite.
    """
    return text.replace("|", "/").replace("\n", " ").replace(";", ",")


def nagios_error_line(what: str, message: str) -> str:
    """The status line of an error that stops a Nagios check: UNKNOWN, saying what and why."""
    return f"CELERY UNKNOWN - {what}: {nagios_text(message)}"


def nagios_warn(threshold: int) -> str:
    """The Nagios warning range for "a backlog at or above ``threshold`` is high".

    A Nagios range ``N`` alerts when the value is above N (or below 0); queue lengths are
    whole numbers, so ``threshold - 1`` alerts exactly from ``threshold`` on.
    """
    return str(threshold - 1)


def render_nagios(verdict: AnyVerdict) -> str:
    """``CELERY OK - text | perfdata`` as the Nagios plugin guidelines describe.

    The first line names the first problem and the codes of the others; each further problem
    then has a line of its own (Nagios' long output), and the checks not attempted because of
    them one line naming their codes, so no separator has to survive inside a line.
    Perfdata: the total backlog, and each probed queue's length with the warning range of its
    own threshold (the tool's rule is per queue: ``length >= threshold`` is high).
    """
    if is_targets_verdict(verdict):
        return render_targets_nagios(verdict)
    status = str(verdict.get("status", "unknown"))
    _code, word = NAGIOS_STATES.get(status, NAGIOS_STATES["unknown"])
    workers = len([w for w in (verdict.get("workers") or {}).values() if w.get("last_heartbeat")])
    reasons = [r for r in verdict.get("reasons") or [] if r.get("severity") != "info"]
    problems = [r for r in reasons if not is_consequence(r)] or reasons
    lines = [nagios_text(f"{r.get('code')}: {r.get('message')}") for r in problems]
    skipped = sorted({str(r.get("code")) for r in reasons if r not in problems})
    if skipped:
        lines.append(f"not attempted because of the above: {', '.join(skipped)}")
    if problems:
        others = sorted({str(r.get("code")) for r in problems[1:]} - {str(problems[0].get("code"))})
        summary = lines[0] + (f" (also {', '.join(others)})" if others else "")
    else:
        summary = f"{workers} worker(s), queue {verdict.get('queue_length')}, roundtrip {_ms(verdict.get('roundtrip_ms'))}"
    perf = [f"workers={workers};;;0"]
    if verdict.get("queue_length") is not None:
        perf.append(f"queue_length={verdict['queue_length']};;;0")
    for name, queue in (verdict.get("queues") or {}).items():
        if isinstance(queue, Mapping) and queue.get("length") is not None:
            threshold = queue.get("threshold")
            warn = nagios_warn(threshold) if isinstance(threshold, int) and threshold > 0 else ""
            perf.append(f"{_perf_label('queue ' + str(name))}={queue['length']};{warn};;0")
    roundtrip = verdict.get("roundtrip_ms")
    if roundtrip is not None:
        perf.append(f"roundtrip={roundtrip / 1000:.4f}s;;;0")
    for key in ("active_tasks", "scheduled_tasks"):
        if verdict.get(key) is not None:
            perf.append(f"{key}={verdict[key]};;;0")
    if verdict.get("duration_s") is not None:
        perf.append(f"duration={verdict['duration_s']:.3f}s;;;0")
    head = f"CELERY {word} - {status}: {nagios_text(summary)} | {' '.join(perf)}"
    return "\n".join([head, *lines[1:]] if len(lines) > 1 else [head])


def _perf_label(label: str) -> str:
    """A perfdata label, quoted (``'`` and ``=`` have no place in one)."""
    return "'" + nagios_text(label).replace("'", "").replace("=", "_") + "'"


def _render_targets_text(verdict: TargetsVerdict, *, colour: bool) -> str:
    """One header for the run, then each target's own summary, indented."""
    status = str(verdict.get("status", "unknown"))
    targets: Mapping[str, Any] = verdict.get("targets") or {}

    def paint(text: str, fg: str | None = None, bold: bool = False) -> str:
        return click.style(text, fg=fg, bold=bold) if colour else text

    duration = verdict.get("duration_s")
    took = f" in {duration:.2f}s" if isinstance(duration, (int, float)) else ""
    summary = ", ".join(f"{name} {t.get('status')}" for name, t in targets.items())
    lines = [f"celery-probe: {paint(status.upper(), STATUS_COLOURS.get(status), bold=True)}  "
             f"{len(targets)} targets{took}: {summary}"]
    for reason in verdict.get("reasons") or []:
        if reason.get("code") == "celery_probe_error" and "target" not in reason:
            lines.append(paint(f"  ? {reason.get('code')} [error]: {reason.get('message')}", "magenta"))
    for name, target in targets.items():
        block = render_text(target, colour=colour).splitlines()
        lines.append(f"[{name}] " + block[0].removeprefix("celery-probe: "))
        lines.extend("  " + line for line in block[1:])
    return "\n".join(lines)


def render_targets_nagios(verdict: TargetsVerdict) -> str:
    """The run's worst state, each target's status, and per-target perfdata."""
    status = str(verdict.get("status", "unknown"))
    _code, word = NAGIOS_STATES.get(status, NAGIOS_STATES["unknown"])
    targets: Mapping[str, Any] = verdict.get("targets") or {}
    parts = []
    perf = []
    for name, target in targets.items():
        problems = [r for r in target.get("reasons") or [] if r.get("severity") != "info"]
        detail = f" ({problems[0].get('code')})" if problems else ""
        parts.append(f"{name} {target.get('status')}{detail}")
        workers = len([w for w in (target.get("workers") or {}).values() if w.get("last_heartbeat")])
        perf.append(f"{_perf_label(f'{name} workers')}={workers};;;0")
        if target.get("queue_length") is not None:
            perf.append(f"{_perf_label(f'{name} queue_length')}={target['queue_length']};;;0")
    text = nagios_text(", ".join(parts))
    return f"CELERY {word} - {status}: {text} | {' '.join(perf)}"
