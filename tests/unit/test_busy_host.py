"""A starved prober maps to unknown, never down: the verdict's side of a busy host."""

from __future__ import annotations

from celery_probe.verdict.mapper import verdict_from_report


class TestStarvedVerdict:
    """The mapper: a starved probe and its consequences are unknown, not down."""

    def test_starved_probe_is_unknown(self):
        report = {"tests": [
            {"nodeid": "test_broker.py::test_broker_answers", "outcome": "failed",
             "metadata": {"probe": {"severity": "critical", "code": "celery_broker_unreachable"},
                          "starved": "the broker connection had 0.10s"},
             "call": {"outcome": "failed", "crash": {"message": "Failed: the prober could not get the time"}}},
            {"nodeid": "test_workers.py::test_workers_answer_ping", "outcome": "failed",
             "metadata": {"probe": {"severity": "critical", "code": "celery_worker_down"},
                          "starved": "not attempted"},
             "call": {"outcome": "failed", "crash": {"message": "Failed: not attempted: the prober"}}},
        ]}
        verdict = verdict_from_report(report)
        assert verdict["status"] == "unknown"
        assert {r["code"] for r in verdict["reasons"]} == {"celery_probe_starved"}
        assert verdict["reasons"][0]["message"].startswith("the prober could not get the time")

    def test_real_evidence_still_wins(self):
        report = {"tests": [
            {"nodeid": "test_broker.py::test_broker_answers", "outcome": "failed",
             "metadata": {"probe": {"severity": "critical", "code": "celery_broker_unreachable"}},
             "call": {"outcome": "failed", "crash": {"message": "Failed: connection refused"}}},
            {"nodeid": "test_roundtrip.py::test_task_roundtrip", "outcome": "failed",
             "metadata": {"probe": {"severity": "critical", "code": "celery_roundtrip_failed"},
                          "starved": "x"},
             "call": {"outcome": "failed", "crash": {"message": "Failed: the prober could not"}}},
        ]}
        assert verdict_from_report(report)["status"] == "down"
