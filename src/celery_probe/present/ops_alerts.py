"""Ops-alerts: turn a verdict into the alert list an operations dashboard polls.

``celery_worker_down`` (critical) when the verdict is down, ``celery_queue_high``
(medium) when a queue is long, one alert per other reason code, and every alert passed in
(``sync_health`` and friends) kept untouched, in front.

When the run had a Flower URL (the verdict's ``links``), each alert about a worker or a queue
gets a ``link`` to the Flower page that fits, chosen by the same mapping as the verdict's
reasons (:func:`celery_probe.verdict.flower.reason_link`) and without credentials. Without one, alerts
have no ``link`` key at all, so the document keeps the shape it always had.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from celery_probe.verdict.flower import reason_link, verdict_base, worker_names
from celery_probe.verdict.mapper import is_consequence, seed_shape
from celery_probe.verdict.model import AlertSeverity, CeleryHealth, OpsAlert, OpsAlertsDocument, Verdict

ALERT_SEVERITY: dict[str, AlertSeverity] = {"critical": "critical", "degraded": "medium", "error": "low"}


def get_ops_alerts(verdict: Verdict, alerts: Iterable[Mapping[str, Any]] | None = None) -> OpsAlertsDocument:
    """``{"alerts": [...], "celery_health": {...}}`` for ``verdict``."""
    out = [cast(OpsAlert, dict(a)) for a in alerts or []]  # the caller's own alerts, kept as given
    status = verdict.get("status")
    reasons = [r for r in verdict.get("reasons") or [] if isinstance(r, Mapping)]
    seen: set[str] = set()
    flower = verdict_base(verdict)
    names = worker_names(verdict) if flower else []

    def add(code: str, severity: AlertSeverity, message: str) -> None:
        if code not in seen:
            seen.add(code)
            alert: OpsAlert = {"code": code, "severity": severity, "source": "celery", "message": message}
            link = reason_link(flower, code, message, names) if flower else None
            if link is not None:
                alert["link"] = link
            out.append(alert)

    if status == "down":
        first = next((r for r in reasons if r.get("severity") == "critical"), None)
        add("celery_worker_down", "critical",
            f"Celery is down: {first.get('message')}" if first else "Celery workers are not processing tasks")
    queue_reason = next((r for r in reasons if r.get("code") == "celery_queue_high"), None)
    if queue_reason is not None or (status == "degraded" and not reasons):
        add("celery_queue_high", "medium",
            str(queue_reason.get("message")) if queue_reason else f"queue length {verdict.get('queue_length')}")
    for reason in reasons:
        severity = ALERT_SEVERITY.get(str(reason.get("severity")))
        if severity is None:
            continue  # informational notes are not alerts
        if is_consequence(reason):
            continue  # a consequence of a root cause already alerted on
        add(str(reason.get("code")), severity, str(reason.get("message")))
    health: CeleryHealth = {**seed_shape(verdict), "reasons": reasons, "checked_at": verdict.get("checked_at")}
    return {"alerts": out, "celery_health": health}
