"""What an alert says about a verdict: its root cause, what that means, what to do.

A verdict lists reasons root cause first; a reason whose message starts with ``not
attempted:`` is only a consequence of an earlier one (the workers cannot be pinged when the
broker does not answer). An alert is about the cause: its subject, headline, impact and
steps follow the first reason that is not a consequence, and the consequences are folded
into one line. Blaming the workers for a broker outage would send the on-call person to
restart the wrong thing, which docs/troubleshooting.md warns against.

Everything here is fixed text chosen by a reason *code*: a code this table does not know
(a custom probe's, or one from a remote endpoint) gets the wording of its status, so
nothing a verdict says reaches a subject line. Steps are ``string.Template`` text with
``$service`` and ``$broker_service``, the validated systemd units.

What Celery does for the operator's product is theirs to say (``--alert-impact``); the
default impact is generic.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celery_probe.verdict.mapper import is_consequence
# The severity that makes each status: the root cause of a down verdict is a critical reason.
STATUS_SEVERITY = {"down": "critical", "degraded": "degraded", "unknown": "error"}


@dataclass(frozen=True)
class Cause:
    """The wording of one kind of problem."""

    what: str  # the subject's noun: "Celery broker"
    state: str  # the subject's state word in capitals: "UNREACHABLE"
    headline: str
    impact: tuple[str, ...]
    steps: tuple[str, ...]

    def title(self, repeat: bool = False) -> str:
        return f"{self.what} {'still ' if repeat else ''}{self.state}"


_DO_NOT_RESTART = ("Do not restart the workers for this: they reconnect by themselves when it is back, "
                   "and a restart drops the tasks they prefetched")
_UNKNOWN_IMPACT = ("Nobody can tell right now whether background tasks are processed",
                   "Treat it as down until the check works again")

CAUSES: dict[str, Cause] = {
    "celery_broker_unreachable": Cause(
        "Celery broker", "UNREACHABLE",
        "The Celery broker does not answer: tasks can be neither queued nor processed.",
        ("The application cannot queue new tasks: its calls fail or wait",
         "Workers have nothing to take until the broker answers again"),
        ("Check the broker service: systemctl status $broker_service",
         "Check that it answers at the address in Target above (redis-cli -h HOST -p PORT ping, "
         "or rabbitmq-diagnostics ping); 'Connection refused' means nothing listens there",
         "Check its memory and disk (a Redis at maxmemory or a RabbitMQ disk alarm blocks publishers) "
         "and anything in between: a proxy, a load balancer, a firewall",
         _DO_NOT_RESTART),
    ),
    "celery_backend_unreachable": Cause(
        "Celery result backend", "UNREACHABLE",
        "The Celery result backend does not answer: task results can be neither stored nor read.",
        ("Code that waits for a task's result (result.get(), chords) fails or waits",
         "Workers may fail tasks whose result they cannot store"),
        ("Check the result backend named in Reasons above (often the broker's service: "
         "systemctl status $broker_service)",
         "Check that it answers, and that this check and the workers use the same result backend",
         _DO_NOT_RESTART),
    ),
    "celery_worker_down": Cause(
        "Celery worker", "DOWN",
        "Celery worker is not responding. Background tasks are not being processed.",
        ("Background tasks are not being processed",
         "Work the application queues waits in the broker until a worker returns"),
        ("Check the worker service: systemctl status $service",
         "Check its logs: journalctl -u $service -n 100",
         "Restart it if needed: systemctl restart $service",
         "Check that it uses the same broker and virtual host or database as Target above"),
    ),
    "celery_queue_unconsumed": Cause(
        "Celery queue", "UNCONSUMED",
        "A Celery queue holds messages that no worker consumes: its tasks are not processed.",
        ("Tasks sent to that queue wait until a worker consumes it",),
        ("Find the queue in Reasons above and the worker that should consume it",
         "See what each worker consumes: celery inspect active_queues",
         "Add the queue to that worker's -Q list, then restart it: systemctl restart $service"),
    ),
    "celery_roundtrip_failed": Cause(
        "Celery tasks", "NOT PROCESSED",
        "Celery is down: workers answer, but tasks are not being processed.",
        ("Background tasks are not completed although workers answer",
         "Work the application queues piles up in the broker"),
        ("Check the worker's logs for errors or a stuck task: journalctl -u $service -n 100",
         "See what the workers are doing: celery inspect active",
         "Check the result backend the workers write to",
         "Restart the worker if it is stuck: systemctl restart $service"),
    ),
    "celery_beat_stale": Cause(
        "Celery beat", "STALE",
        "Celery beat has not ticked in time: periodic tasks are not being queued.",
        ("Periodic tasks are not queued, so they do not run",),
        ("Check the celery beat process and its log (it is often a service of its own)",
         "Make sure exactly one beat runs for this schedule"),
    ),
    "celery_workers_saturated": Cause(
        "Celery workers", "SATURATED",
        "Every Celery worker is busy: tasks wait behind the work in progress.",
        ("Background tasks run late",),
        ("Find the slow tasks: the worker log (journalctl -u $service -n 100) or celery inspect active",
         "Add workers or concurrency for that queue, or move long tasks to a queue of their own"),
    ),
    "celery_queue_high": Cause(
        "Celery queue", "HIGH",
        "A Celery queue is at or above its threshold: tasks are delayed.",
        ("Background tasks on that queue run late",),
        ("See which tasks pile up: Reasons above name the queue and the tasks at its head",
         "Add workers or concurrency for that queue, or find the task that is slow",
         "A queue meant to hold a batch: raise its threshold (--queue-threshold QUEUE=N)"),
    ),
    "celery_workers_missing": Cause(
        "Celery workers", "MISSING",
        "Fewer Celery workers answer than expected: there is less capacity than planned.",
        ("Background tasks may run late",),
        ("See which workers answered in the verdict, and which one is missing",
         "Check the missing worker's service: systemctl status $service",
         "Check its logs: journalctl -u $service -n 100"),
    ),
    "celery_roundtrip_slow": Cause(
        "Celery tasks", "SLOW",
        "Celery tasks go through, but slowly.",
        ("Background tasks run late",),
        ("Look at the workers' load and the queue length",
         "Time the broker and the result backend: a round trip is one publish, one consume, one result"),
    ),
    "celery_probe_check_failed": Cause(
        "Celery health", "UNKNOWN",
        "Celery health is unknown: the health URL gave no verdict.",
        _UNKNOWN_IMPACT,
        ("Check that the health URL (Source above) answers: the application serving it may be down",
         "This says nothing yet about Celery itself"),
    ),
    "celery_probe_starved": Cause(
        "Celery health", "UNKNOWN",
        "Celery health is unknown: the host was too busy for the check to get the time it needed.",
        _UNKNOWN_IMPACT,
        ("The reason above gives the time the check waited for a CPU and the load average: "
         "this says nothing yet about Celery itself",
         "Look at what keeps the host's CPUs busy (often the workers' own CPU-bound tasks)",
         "Give the check a longer --deadline, or run it where it gets a CPU "
         "(docs/troubleshooting.md, A busy host)",
         _DO_NOT_RESTART),
    ),
}
_SLA = Cause("Celery tasks", "SLOW", "Celery tasks take longer than their SLA.", ("Background tasks run late",),
             ("See docs/troubleshooting.md, SLA breaches: a busy pool, a backlog, a slow broker or dependency",))
CAUSES["celery_sla_breach"] = _SLA
CAUSES["celery_task_sla_breach"] = _SLA

# By status, for a code the table does not know (or no root cause at all).
BY_STATUS: dict[str, Cause] = {
    "down": Cause(
        "Celery", "DOWN",
        "Celery is down: a critical check failed.",
        ("Background tasks may not be processed",),
        ("Start from the first reason above: it is the root cause, the rest follows from it",
         "Look it up in docs/probes.md (reason codes) and docs/troubleshooting.md"),
    ),
    "degraded": Cause(
        "Celery", "DEGRADED",
        "Celery is degraded: background tasks are delayed or only partly processed.",
        ("Background tasks run late or only on some queues",),
        ("Start from the first reason above: it is the root cause, the rest follows from it",
         "Look it up in docs/probes.md (reason codes) and docs/troubleshooting.md"),
    ),
    "unknown": Cause(
        "Celery health", "UNKNOWN",
        "Celery health is unknown: the check produced no usable evidence.",
        _UNKNOWN_IMPACT,
        ("The check itself failed: read the first reason above; it says nothing yet about Celery",
         "Run the same celery-probe command by hand and read its output and the report folder's latest.json"),
    ),
}
# How the operator's own words (--alert-impact) are introduced, by status.
IMPACT_LEAD = {"down": "Affected", "degraded": "Delayed", "unknown": "Possibly affected"}


def root_cause(verdict: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The reason the alert is about: the first non-consequence of the status's severity.

    The verdict lists root causes first, but a remote endpoint's order is not trusted, so
    a reason of the severity that made the status wins over an earlier, milder one.
    """
    reasons = [r for r in verdict.get("reasons") or [] if isinstance(r, Mapping) and not is_consequence(r)]
    wanted = STATUS_SEVERITY.get(str(verdict.get("status")))
    return next((r for r in reasons if r.get("severity") == wanted), reasons[0] if reasons else None)


def cause_of(status: str, verdict: Mapping[str, Any]) -> tuple[str | None, Cause]:
    """The root cause's code (None without one) and the wording for it."""
    reason = root_cause(verdict)
    code = str(reason.get("code")) if reason is not None else None
    generic = BY_STATUS.get(status, BY_STATUS["unknown"])
    if reason is None or code not in CAUSES or reason.get("severity") != STATUS_SEVERITY.get(status):
        return code, generic  # the wording must not contradict the status (a remote verdict can be odd)
    return code, CAUSES[code]


def impact_lines(cause: Cause, status: str, operator_text: str | None) -> list[str]:
    """The impact, one item per line: the operator's words first, then the generic ones."""
    lines = [f"{IMPACT_LEAD.get(status, IMPACT_LEAD['unknown'])}: {operator_text}"] if operator_text else []
    return lines + list(cause.impact)


def step_lines(cause: Cause, *, service: str, broker_service: str) -> list[str]:
    """The steps with the operator's systemd units filled in."""
    names = {"service": service, "broker_service": broker_service}
    return [string.Template(step).safe_substitute(names) for step in cause.steps]


def fold(reasons: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(root causes and notes, consequences), each in the verdict's order."""
    shown = [r for r in reasons if not is_consequence(r)]
    return shown, [r for r in reasons if is_consequence(r)]


def folded_line(consequences: Sequence[Mapping[str, Any]], causes: int) -> str | None:
    """``and 9 probes not attempted because of it: code, code…``, or None when there are none."""
    if not consequences:
        return None
    codes = ", ".join(sorted({str(r.get("code")) for r in consequences}))
    count = len(consequences)
    of = "it" if causes == 1 else "the above"
    return f"and {count} probe{'s' if count != 1 else ''} not attempted because of {of}: {codes}"
