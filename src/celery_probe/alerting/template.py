"""Alert texts: subject lines, mail bodies from ``string.Template`` files, chat messages.

The bodies are templates so an operator can say what *their* background tasks do and how
*their* workers are run; the defaults (:data:`DEFAULT_PROBLEM`, :data:`DEFAULT_RECOVERY`,
also shipped as ``docs/deploy/mail-problem.txt`` and ``mail-recovery.txt``) say it for a
systemd deployment. ``$name`` placeholders are listed in :data:`PLACEHOLDERS`; a template
that uses an unknown one is refused when the command starts, not when Celery is down.

Subject, headline, impact and steps follow the verdict's root cause
(:mod:`celery_probe.alerting.causes`), and reasons that only follow from it are folded into
one line. Subjects are built only from fixed words and the operator's ``--label``: nothing
that the verdict (or a remote endpoint) says ever reaches a mail header.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from celery_probe.alerting.causes import cause_of, fold, folded_line, impact_lines, step_lines
from celery_probe.alerting.state import Notification, parse_time
from celery_probe.errors import ProbeUsageError

MAX_TEMPLATE_BYTES = 64 * 1024

PLACEHOLDERS: dict[str, str] = {
    "subject": "the subject line, e.g. [celery-probe CRITICAL] Celery broker UNREACHABLE",
    "headline": "one sentence saying what is wrong (or that it recovered)",
    "cause": "the root cause's reason code (or 'none')",
    "event": "problem, change, repeat or recovery",
    "status": "healthy, degraded, down or unknown",
    "status_upper": "the status in capitals",
    "previous_status": "the status before this one (or 'none')",
    "severity": "CRITICAL, WARNING, UNKNOWN or RECOVERED",
    "label": "the --label of this deployment (or empty)",
    "target": "what was probed, credentials masked",
    "source": "the health URL that `check` read, credentials masked (or 'n/a')",
    "checked_at": "when the verdict was made (UTC)",
    "sent_at": "when this alert was decided (UTC)",
    "since": "when the problem began (UTC)",
    "duration": "how long the problem has lasted, e.g. 1h 05m",
    "worker_alive": "yes, no or unknown",
    "active_tasks": "tasks being executed (or n/a)",
    "scheduled_tasks": "tasks scheduled with an ETA (or n/a)",
    "queue_length": "messages waiting in the watched queues (or n/a)",
    "last_heartbeat": "the latest worker reply (or n/a)",
    "reasons": "one line per reason: - code [severity]: message (and the Flower page for it, with --flower-url); "
               "reasons not attempted because of an earlier one are folded into one line",
    "flower": "the Flower dashboard (--flower-url, credentials removed), or n/a",
    "impact": "what the root cause means for the product, one line per item (--alert-impact adds yours)",
    "steps": "what to do about the root cause, numbered, one line per step",
    "service": "the worker's systemd unit (--service-name)",
    "broker_service": "the broker's systemd unit (--broker-service)",
    "hostname": "the machine that ran the check",
}

DEFAULT_PROBLEM = """\
$headline

Time:            $checked_at
Target:          $target
Status:          $status_upper (before: $previous_status)
Worker alive:    $worker_alive
Active tasks:    $active_tasks
Queue length:    $queue_length
Last heartbeat:  $last_heartbeat
Problem since:   $since ($duration)

Reasons:
$reasons

Impact:
$impact

Action required:
$steps

--
celery-probe on $hostname
"""

DEFAULT_RECOVERY = """\
$headline

Time:            $checked_at
Target:          $target
Status:          HEALTHY (was $previous_status since $since, for $duration)
Worker alive:    $worker_alive
Active tasks:    $active_tasks
Queue length:    $queue_length

Background tasks are being processed again. Work queued during the outage is
being worked off now: watch the queue length fall.

--
celery-probe on $hostname
"""

RECOVERED = "Celery is healthy again."
RECOVERED_IMPACT = "none: background tasks are processed again"

SEVERITY = {"down": "CRITICAL", "degraded": "WARNING", "unknown": "UNKNOWN", "healthy": "RECOVERED"}


@dataclass(frozen=True)
class MailTemplates:
    """The two bodies: one for problems (problem, change, repeat), one for recoveries."""

    problem: string.Template = field(default_factory=lambda: string.Template(DEFAULT_PROBLEM))
    recovery: string.Template = field(default_factory=lambda: string.Template(DEFAULT_RECOVERY))


def check_template(text: str, where: str) -> string.Template:
    """A ``string.Template`` whose placeholders all exist; ProbeUsageError in one line otherwise."""
    template = string.Template(text)
    probe = {name: "" for name in PLACEHOLDERS}
    try:
        template.substitute(probe)
    except KeyError as exc:
        known = ", ".join(f"${name}" for name in PLACEHOLDERS)
        raise ProbeUsageError(f"invalid {where}: unknown placeholder ${exc.args[0]} (known: {known})") from None
    except ValueError as exc:
        raise ProbeUsageError(f"invalid {where}: {exc} (write $$ for a literal $)") from None
    return template


def load_template(path: Path, option: str) -> string.Template:
    """Read and check a template file given with ``option``."""
    where = f"{option} {str(path)!r}"
    try:
        size = path.stat().st_size
        if size > MAX_TEMPLATE_BYTES:
            raise ProbeUsageError(f"invalid {where}: {size} bytes, over the {MAX_TEMPLATE_BYTES}-byte limit")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProbeUsageError(f"invalid {where}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ProbeUsageError(f"invalid {where}: not UTF-8 text") from None
    return check_template(text, where)


def severity_word(note: Notification) -> str:
    return SEVERITY["healthy"] if note.event == "recovery" else SEVERITY.get(note.status, "UNKNOWN")


def subject(note: Notification, label: str | None = None) -> str:
    """``[celery-probe CRITICAL] Celery broker UNREACHABLE`` and friends; fixed words only."""
    if note.event == "recovery":
        title = "Celery healthy again"
    else:
        title = cause_of(note.status, note.verdict)[1].title(repeat=note.event == "repeat")
    text = f"[celery-probe {severity_word(note)}] {title}"
    return f"{text} ({label})" if label else text


def headline(note: Notification) -> str:
    if note.event == "recovery":
        return RECOVERED
    return cause_of(note.status, note.verdict)[1].headline


def _shown(value: Any) -> str:
    return "n/a" if value is None or value == "" else str(value)


def human_time(value: Any) -> str:
    """``2026-11-24 08:51:05 UTC`` for a person reading a mail; n/a, or the text itself if odd."""
    moment = parse_time(value)
    if moment is None:
        return _shown(value)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(start: str | None, end: datetime) -> str:
    began = parse_time(start)
    if began is None:
        return "n/a"
    seconds = max(0, int((end - began).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def reason_lines(verdict: Mapping[str, Any]) -> str:
    """One line per reason, the consequences of the root causes folded into one line."""
    reasons = [r for r in verdict.get("reasons") or [] if isinstance(r, Mapping)]
    if not reasons:
        return "- none given"
    shown, consequences = fold(reasons)
    lines = []
    for r in shown:
        lines.append(f"- {r.get('code')} [{r.get('severity')}]: {r.get('message')}")
        if r.get("link"):
            lines.append(f"  Flower: {r['link']}")
    folded = folded_line(consequences, causes=len([r for r in shown if r.get("severity") != "info"]) or 1)
    if folded:
        lines.append(f"- {folded}")
    return "\n".join(lines)


def advice(note: Notification, *, service: str, broker_service: str,
           impact: str | None = None) -> tuple[str | None, list[str], list[str]]:
    """The root cause's code, the impact items and the steps, for a mail or a payload."""
    if note.event == "recovery":
        return None, [RECOVERED_IMPACT], []
    code, cause = cause_of(note.status, note.verdict)
    return (code, impact_lines(cause, note.status, impact),
            step_lines(cause, service=service, broker_service=broker_service))


def fields(note: Notification, *, label: str | None, service: str, broker_service: str, hostname: str,
           impact: str | None = None) -> dict[str, str]:
    """Every placeholder's value for ``note`` (all strings, untrusted parts one line each)."""
    verdict = note.verdict
    created = parse_time(note.created_at) or datetime.now(timezone.utc)
    alive = verdict.get("worker_alive")
    code, items, steps = advice(note, service=service, broker_service=broker_service, impact=impact)
    return {
        "subject": subject(note, label),
        "headline": headline(note),
        "cause": code or "none",
        "event": note.event,
        "status": note.status,
        "status_upper": note.status.upper(),
        "previous_status": note.previous_status or "none",
        "severity": severity_word(note),
        "label": label or "",
        "target": _shown(verdict.get("target")),
        "source": _shown(verdict.get("source")),
        "checked_at": human_time(verdict.get("checked_at") or note.created_at),
        "sent_at": human_time(note.created_at),
        "since": human_time(note.since),
        "duration": _duration(note.since, created),
        "worker_alive": "yes" if alive is True else "no" if alive is False else "unknown",
        "active_tasks": _shown(verdict.get("active_tasks")),
        "scheduled_tasks": _shown(verdict.get("scheduled_tasks")),
        "queue_length": _shown(verdict.get("queue_length")),
        "last_heartbeat": human_time(verdict.get("last_heartbeat")),
        "reasons": reason_lines(verdict),
        "flower": _shown((verdict.get("links") or {}).get("flower")),
        "impact": "\n".join(f"- {item}" for item in items),
        "steps": "\n".join(f"{n}. {step}" for n, step in enumerate(steps, 1)) or "- none",
        "service": service,
        "broker_service": broker_service,
        "hostname": hostname,
    }


def render_body(templates: MailTemplates, note: Notification, values: Mapping[str, str]) -> str:
    template = templates.recovery if note.event == "recovery" else templates.problem
    return template.substitute(values)


def short_text(note: Notification, values: Mapping[str, str], limit: int = 3500) -> str:
    """A chat message (Slack, Telegram): subject, target, worker, reasons, steps; at most ``limit``."""
    lines = [values["subject"], values["headline"], f"Target: {values['target']}",
             f"Worker alive: {values['worker_alive']}  Queue length: {values['queue_length']}"]
    if note.event == "recovery":
        lines.append(f"Was {values['previous_status']} since {values['since']} ({values['duration']})")
    else:
        lines.append(f"Since: {values['since']} ({values['duration']})")
        lines.append(values["reasons"])
        lines.append("What to do:")
        lines.append(values["steps"])
    text = "\n".join(lines)
    return text if len(text) <= limit else text[: limit - 1] + "…"
