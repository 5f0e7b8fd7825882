"""The fourteen cases of the original health-check contract, each against real evidence.

Worker states come from real worker processes (or reports captured from them in
tests/reports/); the endpoint cases use a real HTTP server; ops-alerts cases use real
verdicts. Several repeat, in the contract's own words, what other modules test in depth.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from celery_probe.present.ops_alerts import get_ops_alerts
from celery_probe.testing import CeleryWorker, free_port
from celery_probe.verdict.mapper import verdict_from_report
from tests.support.environment import APPS, app_env

REPORTS = Path(__file__).parent / "reports"
SEED_KEYS = {"worker_alive", "active_tasks", "scheduled_tasks", "queue_length", "last_heartbeat", "status"}


def captured(name: str) -> dict:
    return verdict_from_report(json.loads((REPORTS / f"{name}.json").read_text()))


@pytest.fixture(scope="module")
def env(module_target):
    return module_target.env()


@pytest.fixture(scope="module")
def worker(env):
    with CeleryWorker("probe_test_app", name="seed@%h", env=env, pythonpath=[APPS],
                      queues=[env["PROBE_TEST_DEFAULT_QUEUE"]]) as w:
        yield w


def probe(cli, env, *extra):
    return cli("run", "-A", "probe_test_app", "--deadline", "2", "--format", "json", *extra, env=env)


def test_healthy_state(worker, env, cli):
    """Normal queue, worker alive: healthy."""
    verdict = probe(cli, env).verdict()
    assert verdict["status"] == "healthy" and verdict["worker_alive"] is True
    assert SEED_KEYS <= set(verdict) and verdict["queue_length"] < 100


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


def test_down_state_exception(cli, http_server):
    """An unexpected exception talking to the 'broker' (an HTTP server, not Redis): down."""
    port = http_server.server_address[1]
    result = probe(cli, app_env(f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1"))
    verdict = result.verdict()
    assert result.code == 2 and verdict["reasons"][0]["code"] == "celery_broker_unreachable"
    assert "Traceback" not in result.stderr


def test_multiple_workers():
    """Metrics aggregate across workers (real report of two workers)."""
    verdict = captured("healthy_two_workers")
    assert len(verdict["workers"]) == 2 and verdict["worker_alive"] is True
    assert verdict["active_tasks"] == sum(w["active"] for w in verdict["workers"].values())
    assert verdict["queues"]["celery"]["consumers"] == 2


def test_empty_worker_responses(env, cli):
    """No worker at all answers (an empty reply list): down, with nulls, not zeros or a crash."""
    port = free_port()
    result = probe(cli, app_env(f"redis://127.0.0.1:{port}/0"))
    assert result.code == 2
    shape = {k: result.verdict()[k] for k in SEED_KEYS}
    assert shape["worker_alive"] is False and shape["last_heartbeat"] is None
    assert shape["active_tasks"] is None and shape["scheduled_tasks"] is None


def test_health_endpoint_returns_status(worker, env, cli, http_server):
    """The endpoint probe reads the status a health endpoint returns."""
    verdict = probe(cli, env, "--endpoint", http_server.url("/degraded")).verdict()
    assert verdict["endpoints"][0]["status"] == "degraded" and verdict["endpoints"][0]["http_status"] == 200


def test_health_endpoint_healthy(worker, env, cli, http_server):
    """An endpoint reporting healthy keeps the verdict healthy."""
    result = probe(cli, env, "--endpoint", http_server.url("/healthy"))
    assert result.code == 0 and result.verdict()["status"] == "healthy"


def test_health_endpoint_down(worker, env, cli, http_server):
    """An endpoint reporting down is celery_endpoint_down."""
    result = probe(cli, env, "--endpoint", http_server.url("/down"))
    assert result.code == 3 and result.codes() == {"celery_endpoint_down"}


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
