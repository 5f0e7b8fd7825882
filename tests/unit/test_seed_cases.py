"""The original health-check contract, on captured reports: statuses and ops-alerts documents."""

from __future__ import annotations

import json
from pathlib import Path

from celery_probe.present.ops_alerts import get_ops_alerts
from celery_probe.verdict.mapper import verdict_from_report

REPORTS = Path(__file__).resolve().parents[1] / "reports"
SEED_KEYS = {"worker_alive", "active_tasks", "scheduled_tasks", "queue_length", "last_heartbeat", "status"}


def captured(name: str) -> dict:
    return verdict_from_report(json.loads((REPORTS / f"{name}.json").read_text()))


def test_degraded_state_high_queue():
    """Queue >= 100 tasks: degraded, celery_queue_high (real report of a 130-message backlog)."""
    verdict = captured("queue_high_saturated")
    assert verdict["status"] == "degraded" and verdict["queue_length"] >= 100
    assert "celery_queue_high" in {r["code"] for r in verdict["reasons"]}


def test_down_state_no_ping():
    """Worker not responding: down, celery_worker_down."""
    verdict = captured("no_worker")
    assert verdict["status"] == "down" and verdict["worker_alive"] is False
    assert verdict["reasons"][0]["code"] == "celery_worker_down"


def test_down_state_timeout():
    """The broker never answers (frozen): down within the deadline, not a hang."""
    verdict = captured("broker_frozen")
    assert verdict["status"] == "down" and verdict["duration_s"] < 2 + 1
    assert "did not answer: no answer within" in verdict["reasons"][0]["message"]


def test_multiple_workers():
    """Metrics aggregate across workers (real report of two workers)."""
    verdict = captured("healthy_two_workers")
    assert len(verdict["workers"]) == 2 and verdict["worker_alive"] is True
    assert verdict["active_tasks"] == sum(w["active"] for w in verdict["workers"].values())
    assert verdict["queues"]["celery"]["consumers"] == 2


def test_ops_alerts_includes_celery_down():
    """Down: a critical celery_worker_down alert."""
    alerts = get_ops_alerts(captured("no_worker"))["alerts"]
    assert {"code": "celery_worker_down", "severity": "critical"}.items() <= alerts[0].items()


def test_ops_alerts_includes_celery_degraded():
    """Degraded with a long queue: a medium celery_queue_high alert."""
    alerts = {a["code"]: a for a in get_ops_alerts(captured("queue_high_saturated"))["alerts"]}
    assert alerts["celery_queue_high"]["severity"] == "medium"


def test_ops_alerts_no_celery_alert_when_healthy():
    """Healthy: no celery alert, and existing alerts are preserved untouched."""
    sync = {"code": "sync_health", "severity": "high", "message": "chat sync is 20 min behind"}
    result = get_ops_alerts(captured("healthy_two_workers"), alerts=[sync])
    assert result["alerts"] == [sync]


def test_ops_alerts_includes_celery_health_payload():
    """The payload carries the classic health dict."""
    payload = get_ops_alerts(captured("healthy_two_workers"))["celery_health"]
    assert SEED_KEYS <= set(payload) and payload["status"] == "healthy"
