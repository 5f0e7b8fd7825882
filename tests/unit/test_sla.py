"""SLA tracking, the pure part: percentiles, rules, and how verdicts and metrics carry them."""

from __future__ import annotations

from typing import Any

import pytest

from celery_probe.present.metrics import metric_families, render
from celery_probe.verdict.mapper import verdict_from_report
from celery_probe.verdict.sla import percentile, queue_slas, rule_for, runtime_stats

# ------------------------------------------------------------------ pure arithmetic


class TestArithmetic:
    """Percentiles, pattern rules and breach decisions, without any I/O."""

    def test_nearest_rank_percentiles(self):
        values = [0.1 * i for i in range(1, 21)]  # 0.1 .. 2.0
        assert percentile(values, 50) == pytest.approx(1.0)
        assert percentile(values, 95) == pytest.approx(1.9)
        assert percentile([0.3], 95) == 0.3

    def test_first_matching_pattern_wins(self):
        rules = [("app.sync.*", 120.0), ("app.*", 10.0)]
        assert rule_for("app.sync.chats", rules) == ("app.sync.*", 120.0)
        assert rule_for("app.ai.analyse", rules) == ("app.*", 10.0)
        assert rule_for("other.task", rules) is None

    def test_breach_is_p95_over_sla_not_one_outlier(self):
        runtimes = {"app.ai.analyse": [1.0] * 19 + [30.0], "app.sync.chats": [150.0, 160.0]}
        stats = runtime_stats(runtimes, {"app.ai.analyse": 2}, [("app.sync.*", 120.0), ("app.ai.*", 10.0)])
        ai, sync = stats["app.ai.analyse"], stats["app.sync.chats"]
        assert (ai["count"], ai["failed"], ai["p95_ms"], ai["max_ms"], ai["breach"]) == (20, 2, 1000.0, 30000.0, False)
        assert (sync["p50_ms"], sync["sla_ms"], sync["breach"]) == (150000.0, 120000.0, True)

    def test_queue_without_a_round_trip_is_not_judged(self):
        judged = queue_slas({"celery": 12.5, "mail": None}, [("celery", 0.01), ("mail", 2.0), ("other", 1.0)])
        assert judged == {"celery": {"sla_ms": 10.0, "roundtrip_ms": 12.5, "breach": True},
                          "mail": {"sla_ms": 2000.0, "roundtrip_ms": None, "breach": None}}


# ------------------------------------------------------------------ the verdict and metrics


def _report(measured: dict[str, Any], outcome: str = "passed") -> dict[str, Any]:
    return {"created": 0, "duration": 1.0, "tests": [{
        "nodeid": "probes/test_x.py::test_x", "outcome": outcome,
        "metadata": {"probe": {"severity": "degraded", "code": "celery_task_sla_breach"}, "measured": measured},
    }]}


def test_verdict_and_metrics_carry_slas_and_runtimes():
    verdict = verdict_from_report(_report({
        "sla": {"celery": {"sla_ms": 2000.0, "roundtrip_ms": 8.5, "breach": False}},
        "task_runtimes": {"window_s": 2.5, "task_events": 9, "unnamed": 1, "tasks": {
            "app.sync.chats": {"count": 3, "failed": 1, "p50_ms": 150000.0, "p95_ms": 160000.0,
                               "max_ms": 160000.0, "sla_ms": 120000.0, "breach": True},
            "app.misc": {"count": 2, "failed": 0, "p50_ms": 5.0, "p95_ms": 6.0, "max_ms": 6.0,
                         "sla_ms": None, "breach": False}}},
    }))
    assert (verdict["queues"]["celery"]["sla_ms"], verdict["queues"]["celery"]["sla_breach"]) == (2000.0, False)
    assert verdict["task_runtimes"]["tasks"]["app.sync.chats"]["breach"] is True
    text = render(metric_families(verdict)).decode()
    assert 'celery_probe_queue_sla_seconds{queue="celery"} 2.0' in text
    assert 'celery_probe_queue_sla_breach{queue="celery"} 0.0' in text
    assert 'celery_probe_task_runtime_p95_seconds{task="app.sync.chats"} 160.0' in text
    assert 'celery_probe_task_sla_breach{task="app.sync.chats"} 1.0' in text
    assert 'celery_probe_task_sla_breach{task="app.misc"}' not in text  # no SLA, no breach gauge
    assert 'celery_probe_task_runs{task="app.misc"} 2.0' in text


def test_collector_joins_names_and_skips_the_probes_own_tasks():
    """Outcomes take their task's name from task-received; the probe's own tasks and odd events count as events only."""
    from celery_probe.probing.events import EventWindow, _Collector

    window = EventWindow()
    handlers = _Collector(window, frozenset({"ours"})).handlers()
    handlers["task-received"]({"type": "task-received", "uuid": "a", "name": "app.slow"})
    handlers["task-received"]({"type": "task-received", "uuid": "b", "name": "app.slow"})
    handlers["task-received"]({"type": "task-received", "uuid": "ours", "name": "celery.accumulate"})
    handlers["task-succeeded"]({"type": "task-succeeded", "uuid": "a", "runtime": 1.5})
    handlers["task-succeeded"]({"type": "task-succeeded", "uuid": "b", "runtime": None})  # no runtime: not judged
    handlers["task-failed"]({"type": "task-failed", "uuid": "b"})
    handlers["task-succeeded"]({"type": "task-succeeded", "uuid": "ours", "runtime": 0.01})
    handlers["task-failed"]({"type": "task-failed", "uuid": "ours"})
    handlers["task-succeeded"]({"type": "task-succeeded", "uuid": "before-the-window", "runtime": 2.0})
    handlers["task-failed"]({"type": "task-failed", "uuid": ["not", "hashable"]})
    handlers["task-succeeded"]({"type": "task-succeeded", "uuid": {"x": 1}, "runtime": True})
    handlers["*"]({"type": "worker-heartbeat"})
    assert window.runtimes == {"app.slow": [1.5]} and window.failed == {"app.slow": 1}
    assert window.unnamed == 2  # before-the-window, and the failure with a list for a uuid
    assert (window.events, window.task_events) == (12, 11)
