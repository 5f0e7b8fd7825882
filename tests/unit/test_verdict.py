"""The verdict mapper, a pure function, on reports that real runs produced (tests/reports/)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from celery_probe.errors import exit_code, status_of_exit_code
from celery_probe.present.ops_alerts import get_ops_alerts
from celery_probe.present.text import render_nagios, render_text
from celery_probe.verdict.mapper import STATUSES, seed_shape, unknown_verdict, verdict_from_report

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def report(name: str) -> dict:
    return json.loads((REPORTS / f"{name}.json").read_text())


def codes(verdict: dict, severity: str | None = None) -> set[str]:
    return {r["code"] for r in verdict["reasons"] if severity is None or r["severity"] == severity}


class TestRealReports:
    """Each captured report maps to the status and codes of the state it was captured in."""

    def test_healthy_two_workers(self):
        verdict = verdict_from_report(report("healthy_two_workers"))
        assert verdict["status"] == "healthy" and verdict["reasons"] == []
        assert verdict["worker_alive"] is True and len(verdict["workers"]) == 2
        assert verdict["active_tasks"] == 0 and verdict["scheduled_tasks"] == 0
        assert verdict["queue_length"] == 0 and verdict["queues"]["celery"]["consumers"] == 2
        assert verdict["roundtrip_ms"] > 0
        assert verdict["last_heartbeat"] == max(w["last_heartbeat"] for w in verdict["workers"].values())
        assert verdict["checked_at"].endswith("+00:00") and verdict["duration_s"] > 0

    def test_no_worker(self):
        verdict = verdict_from_report(report("no_worker"))
        assert verdict["status"] == "down" and verdict["worker_alive"] is False
        assert verdict["reasons"][0]["code"] == "celery_worker_down"
        assert verdict["last_heartbeat"] is None and verdict["active_tasks"] is None

    def test_workers_missing_is_degraded(self):
        verdict = verdict_from_report(report("workers_missing"))
        assert verdict["status"] == "degraded" and codes(verdict) == {"celery_workers_missing"}

    def test_queue_high_in_priority_lists(self):
        verdict = verdict_from_report(report("queue_high_saturated"))
        assert verdict["status"] == "degraded"
        assert {"celery_queue_high", "celery_workers_saturated"} <= codes(verdict)
        assert verdict["queues"]["bulk"]["by_priority"]["9"] >= 100
        assert verdict["queue_length"] >= 100 and verdict["active_tasks"] == 1

    def test_no_backend_is_healthy_but_says_so(self):
        verdict = verdict_from_report(report("no_backend"))
        assert verdict["status"] == "healthy" and verdict["roundtrip_ms"] is None
        assert "celery_roundtrip_unconfirmed" in codes(verdict, "info")

    @pytest.mark.parametrize("name", ["broker_frozen", "broker_refused"])
    def test_broker_unreachable_first(self, name):
        verdict = verdict_from_report(report(name))
        assert verdict["status"] == "down"
        assert verdict["reasons"][0]["code"] == "celery_broker_unreachable"
        later = verdict["reasons"][2:]
        assert later and all(r["message"].startswith("not attempted") for r in later)

    def test_pure_and_repeatable(self):
        original = report("healthy_two_workers")
        kept = copy.deepcopy(original)
        assert verdict_from_report(original) == verdict_from_report(original)
        assert original == kept, "the mapper must not modify its input"


class TestBrokenEvidence:
    """Missing, truncated or foreign reports give unknown, never an exception."""

    @pytest.mark.parametrize("value", [None, [], "text", 3, {"tests": "x"}, {"tests": [1, "a", None]},
                                       {"tests": [{"outcome": "skipped"}]}])
    def test_foreign_shapes(self, value):
        verdict = verdict_from_report(value)
        assert verdict["status"] == "unknown" and verdict["reasons"]

    def test_report_without_tests_that_ran(self):
        empty = report("healthy_two_workers")
        empty["tests"] = []
        assert verdict_from_report(empty)["status"] == "unknown"

    def test_collection_error_is_unknown(self):
        broken = report("healthy_two_workers")
        broken["tests"] = []
        broken["collectors"] = [{"nodeid": "custom/test_mine.py", "outcome": "failed",
                                 "longrepr": "E   ImportError: no module named x"}]
        verdict = verdict_from_report(broken)
        assert verdict["status"] == "unknown"
        assert verdict["reasons"][0]["code"] == "celery_probe_error"
        assert "ImportError" in verdict["reasons"][0]["message"]

    def test_hostile_values_inside_a_real_report(self):
        hostile = report("healthy_two_workers")
        for test in hostile["tests"]:
            test["metadata"] = {"measured": {"ping": {"workers": [{"name": 5, "latency_ms": "x"}]},
                                             "queues": {"celery": {"length": float("nan")}}},
                                "probe": ["not", "a", "dict"]}
        hostile["created"] = "yesterday"
        verdict = verdict_from_report(hostile)
        assert verdict["status"] in STATUSES and verdict["checked_at"] is None

    def test_unmarked_failing_probe_counts_as_critical(self):
        custom = report("healthy_two_workers")
        custom["tests"].append({"nodeid": "mine.py::test_x", "outcome": "failed",
                                "call": {"outcome": "failed", "crash": {"message": "AssertionError: nope"}}})
        verdict = verdict_from_report(custom)
        assert verdict["status"] == "down"
        assert verdict["reasons"][0] == {"code": "celery_probe_failed", "severity": "critical",
                                         "probe": "mine.py::test_x", "message": "nope"}

    @pytest.mark.parametrize("severity, status", [("degraded", "degraded"), ("critical", "down"), ("error", "unknown")])
    def test_probe_cut_by_its_own_timeout_keeps_its_severity(self, severity, status):
        custom = report("healthy_two_workers")
        message = "probe exceeded its 1 s timeout (from its timeout marker)"
        custom["tests"].append({"nodeid": "mine.py::test_x", "outcome": "failed",
                                "metadata": {"probe": {"severity": severity, "code": "myapp_x"},
                                             "timed_out": message},
                                "call": {"outcome": "failed", "longrepr": message}})
        verdict = verdict_from_report(custom)
        assert verdict["status"] == status
        assert verdict["reasons"][0] == {"code": "celery_probe_timeout", "severity": severity,
                                         "probe": "mine.py::test_x", "message": message}


class TestOutputs:
    """Exit codes, the seed shape, text and Nagios renderings of real verdicts."""

    def test_exit_codes(self):
        assert [exit_code(s) for s in STATUSES] == [0, 3, 2, 4]
        assert exit_code("anything else") == 4
        assert [status_of_exit_code(exit_code(s)) for s in STATUSES] == list(STATUSES)
        assert status_of_exit_code(64) is None

    def test_seed_shape(self):
        shape = seed_shape(verdict_from_report(report("no_worker")))
        assert shape == {"worker_alive": False, "active_tasks": None, "scheduled_tasks": None,
                         "queue_length": 0, "last_heartbeat": None, "status": "down"}

    def test_text_groups_consequences(self):
        text = render_text(verdict_from_report(report("broker_refused")), colour=False)
        assert "celery_broker_unreachable" in text.splitlines()[2]
        assert "not attempted because of the above" in text
        assert "\x1b[" not in text
        assert "\x1b[31m" in render_text(verdict_from_report(report("broker_refused")), colour=True)

    def test_nagios(self):
        line = render_nagios(verdict_from_report(report("queue_high_saturated")))
        assert line.startswith("CELERY WARNING - degraded: celery_queue_high")
        assert "queue_length=" in line.split(" | ")[1]
        assert render_nagios(unknown_verdict("x")).startswith("CELERY UNKNOWN")


class TestOpsAlerts:
    """get_ops_alerts: critical worker-down, medium queue-high, others kept untouched."""

    def test_down(self):
        result = get_ops_alerts(verdict_from_report(report("no_worker")))
        first = result["alerts"][0]
        assert first["code"] == "celery_worker_down" and first["severity"] == "critical"
        assert result["celery_health"]["status"] == "down"

    def test_degraded_queue(self):
        result = get_ops_alerts(verdict_from_report(report("queue_high_saturated")))
        by_code = {a["code"]: a for a in result["alerts"]}
        assert by_code["celery_queue_high"]["severity"] == "medium"
        assert "celery_worker_down" not in by_code

    def test_healthy_has_no_alert_and_keeps_existing(self):
        existing = [{"code": "sync_health", "severity": "high", "message": "sync lagging"}]
        result = get_ops_alerts(verdict_from_report(report("healthy_two_workers")), alerts=existing)
        assert result["alerts"] == existing
        assert set(result["celery_health"]) >= {"worker_alive", "active_tasks", "scheduled_tasks",
                                                "queue_length", "last_heartbeat", "status"}

    def test_info_notes_are_not_alerts(self):
        result = get_ops_alerts(verdict_from_report(report("no_backend")))
        assert result["alerts"] == []
