"""The doctor's pure judgement: each rule from facts, both ways, and what a review exits with."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from celery_probe.doctor.catalogue import RULES
from celery_probe.doctor.facts import (
    AppFacts,
    BrokerFacts,
    ConsumedQueue,
    EventsFacts,
    Facts,
    QueuedEta,
    RedisFacts,
    TaskLimit,
    Unchecked,
    WorkerFacts,
)
from celery_probe.doctor.messages import (
    eta_timestamp,
    message_eta,
    unacked_entry,
    versions_from_report,
)
from celery_probe.doctor.render import Review, as_dict, exit_code, render_text
from celery_probe.doctor.rules import FINDING, NOT_APPLICABLE, NOT_CHECKED, PASSED, evaluate

SAFE_KEYS = frozenset({"worker_cancel_long_running_tasks_on_connection_loss", "broker_connection_retry_on_startup"})


def safe_app(**changes) -> AppFacts:
    app = AppFacts("proj", "5.7.0", "5.7.0", set_keys=SAFE_KEYS, time_limit=300.0, result_backend="redis://h/1",
                   tasks=[TaskLimit("proj.add", 300.0)], declared_queues=[], default_queue="celery")
    return replace(app, **changes)


def worker(name="w1@h", **changes) -> WorkerFacts:
    found = WorkerFacts(name, conf={key: True for key in SAFE_KEYS}, celery_version="5.7.0", kombu_version="5.7.0",
                        backend="redis://h/1", pool_timeouts=(0.0, 0.0), queues=[ConsumedQueue("celery", "direct")])
    return replace(found, **changes)


def facts(app=None, workers=None, transport="redis", redis=None, **changes) -> Facts:
    redis = redis if redis is not None else (RedisFacts("noeviction", 0) if transport == "redis" else None)
    broker = BrokerFacts(transport, f"{transport}://h", redis=redis)
    return replace(Facts(app or safe_app(), broker, [worker()] if workers is None else workers,
                         probe_celery_version="5.7.0", probe_kombu_version="5.7.0"), **changes)


def by_code(found: Facts) -> dict:
    return {check.code: check for check in evaluate(found)}


def test_a_safe_deployment_passes_every_rule():
    checks = by_code(facts())
    assert {c.status for c in checks.values()} <= {PASSED, NOT_APPLICABLE}
    assert checks["quorum-queue-eta"].status == NOT_APPLICABLE
    assert checks["task-events-off"].status == NOT_APPLICABLE
    assert set(checks) == {rule.code for rule in RULES}


@pytest.mark.parametrize("policy, maxmemory, severity", [("allkeys-lru", 10**8, "critical"),
                                                          ("volatile-ttl", 0, "warning")])
def test_eviction(policy, maxmemory, severity):
    check = by_code(facts(redis=RedisFacts(policy, maxmemory)))["redis-eviction-policy"]
    assert check.status == FINDING and check.severity == severity and policy in check.seen


def test_eviction_not_checked_says_why():
    check = by_code(facts(redis=RedisFacts(Unchecked("CONFIG renamed"))))["redis-eviction-policy"]
    assert check.status == NOT_CHECKED and check.reason == "CONFIG renamed"


def test_eta_beyond_the_visibility_timeout():
    etas = [QueuedEta("celery", "proj.add", 7200.0, "queue"), QueuedEta("celery", "proj.add", 60.0, "queue")]
    check = by_code(facts(redis=RedisFacts("noeviction", 0, etas=etas, scanned=2)))["redis-visibility-timeout"]
    assert check.status == FINDING and check.severity == "critical"
    assert "1 message(s) wait longer: proj.add in celery (queue) due in 7200s" in check.seen


def test_unacked_eta_is_judged_by_its_redelivery_time():
    soon = QueuedEta("celery", "proj.add", 100.0, "unacked", redelivery_in=3500.0)
    late = QueuedEta("celery", "proj.add", 3000.0, "unacked", redelivery_in=2000.0)
    assert by_code(facts(redis=RedisFacts("noeviction", 0, etas=[soon])))["redis-visibility-timeout"].status == PASSED
    assert by_code(facts(redis=RedisFacts("noeviction", 0, etas=[late])))["redis-visibility-timeout"].status == FINDING


def test_the_shortest_visibility_timeout_of_app_and_workers_counts():
    etas = [QueuedEta("celery", "proj.add", 600.0, "queue")]
    short = worker(conf={**worker().conf, "broker_transport_options": {"visibility_timeout": 300}})
    check = by_code(facts(workers=[worker(), short], redis=RedisFacts("noeviction", 0, etas=etas)))
    assert check["redis-visibility-timeout"].seen.startswith("visibility_timeout 300s (set on w1@h) but 1 message")
    assert by_code(facts(redis=RedisFacts("noeviction", 0, etas=etas)))["redis-visibility-timeout"].status == PASSED


def test_acks_late_with_a_time_limit_beyond_the_visibility_timeout():
    app = safe_app(acks_late=True, visibility_timeout=60.0, visibility_timeout_set=True, time_limit=120.0,
                   tasks=[TaskLimit("proj.add", 120.0), TaskLimit("proj.long", 900.0)])
    check = by_code(facts(app))["redis-visibility-timeout-acks-late"]
    assert check.seen == "task_acks_late on, visibility_timeout 60s, but proj.long 900s, task_time_limit 120s"
    assert by_code(facts(safe_app(acks_late=True)))["redis-visibility-timeout-acks-late"].status == PASSED


def test_quorum_queue_on_a_direct_exchange():
    workers = [worker(queues=[ConsumedQueue("celery", "direct", "quorum")], scheduled=3)]
    check = by_code(facts(workers=workers, transport="amqp"))["quorum-queue-eta"]
    assert check.severity == "critical" and "held now: w1@h 3" in check.seen
    quiet = by_code(facts(workers=[worker(queues=[ConsumedQueue("celery", "direct", "quorum")], scheduled=0)],
                          transport="amqp"))["quorum-queue-eta"]
    assert quiet.severity == "warning"
    topic = by_code(facts(safe_app(quorum_queues={"celery": "topic"}), transport="amqp"))["quorum-queue-eta"]
    assert topic.status == PASSED


def test_quorum_detection_turned_off_on_a_worker():
    off = worker(conf={**worker().conf, "worker_detect_quorum_queues": False},
                 queues=[ConsumedQueue("celery", "topic", "quorum")])
    check = by_code(facts(workers=[off], transport="amqp"))["quorum-queue-eta"]
    assert check.status == FINDING and "worker_detect_quorum_queues off on w1@h" in check.seen


def test_quorum_queue_with_an_old_celery_worker():
    workers = [worker(celery_version="5.4.0", queues=[ConsumedQueue("celery", "topic", "quorum")])]
    check = by_code(facts(workers=workers, transport="amqp"))["quorum-queue-eta"]
    assert check.status == FINDING and "Celery older than 5.5" in check.seen and "w1@h (5.4.0)" in check.seen


def test_no_time_limit_unless_the_workers_have_one():
    app = safe_app(time_limit=None, tasks=[TaskLimit("proj.add"), TaskLimit("proj.capped", 30.0)])
    check = by_code(facts(app))["no-time-limit"]
    assert check.status == FINDING and "tasks without a limit: proj.add;" in check.seen
    limited = by_code(facts(app, workers=[worker(pool_timeouts=(0.0, 600.0))]))["no-time-limit"]
    assert limited.status == PASSED


def test_a_worker_that_did_not_answer_inspect_is_no_evidence():
    silent = WorkerFacts("w2@h")  # answered ping, not the inspect questions
    checks = by_code(facts(safe_app(time_limit=None, tasks=[TaskLimit("proj.add")]), workers=[worker(), silent]))
    assert "w2@h" not in checks["no-time-limit"].seen
    assert by_code(facts(workers=[worker(), silent]))["no-result-backend"].status == PASSED
    assert by_code(facts(workers=[worker(), silent]))["connection-retry-on-startup"].status == PASSED
    unknown = by_code(facts(workers=[WorkerFacts("w2@h", answered_queues=False)]))["queue-drift"]
    assert unknown.status == NOT_CHECKED and unknown.reason == "no worker answered active_queues"


def test_unset_settings_name_who_misses_them():
    app = safe_app(set_keys=frozenset())
    checks = by_code(facts(app, workers=[worker(conf={})]))
    assert checks["connection-retry-on-startup"].seen == "broker_connection_retry_on_startup unset on the app, w1@h"
    assert checks["cancel-on-connection-loss"].severity == "info"
    acks = by_code(facts(safe_app(set_keys=frozenset(), acks_late=True)))["cancel-on-connection-loss"]
    assert acks.severity == "warning" and acks.seen.endswith("(and task_acks_late is on)")


def test_no_result_backend_is_critical_with_round_trip_slas():
    app = safe_app(result_backend=None)
    assert by_code(facts(app))["no-result-backend"].severity == "warning"
    assert by_code(facts(app, queue_slas=["celery"]))["no-result-backend"].severity == "critical"
    assert by_code(facts(workers=[worker(backend="disabled")]))["no-result-backend"].seen == "no result backend on w1@h"


def test_task_events():
    silent = EventsFacts(sent={"celery": "id"}, ran={"celery": True}, listened_s=2.0)
    check = by_code(facts(task_slas=["proj.*"], events=silent))["task-events-off"]
    assert check.status == FINDING and "celery (its result came back)" in check.seen
    heard = EventsFacts(sent={"celery": "id"}, ran={"celery": True}, task_events_from={"celery": ["w1@h"]})
    assert by_code(facts(task_slas=["proj.*"], events=heard))["task-events-off"].status == PASSED
    missing = by_code(facts(task_slas=["proj.*"], events=EventsFacts(missing_exchange="celeryev")))["task-events-off"]
    assert missing.status == FINDING and "celeryev does not exist" in missing.seen
    unchecked = by_code(facts(task_slas=["proj.*"], events=Unchecked("no worker")))["task-events-off"]
    assert unchecked.status == NOT_CHECKED


def test_version_drift():
    workers = [worker(), worker("w2@h", celery_version="5.4.0", kombu_version="5.4.2")]
    check = by_code(facts(workers=workers))["version-drift"]
    assert check.seen == ("celery 5.4.0 on w2@h; 5.7.0 on the app, w1@h; kombu 5.4.2 on w2@h; "
                          "5.7.0 on the app, w1@h")


def test_queue_drift_ignores_broadcast_and_known_queues():
    queues = [ConsumedQueue("celery"), ConsumedQueue("math"), ConsumedQueue("stale"),
              ConsumedQueue("bcast.1", "fanout", broadcast=True)]
    check = by_code(facts(safe_app(routed_queues=["math"]), workers=[worker(queues=queues)]))["queue-drift"]
    assert check.seen == "stale consumed by w1@h; the app knows celery, math"


def test_an_unreachable_broker_leaves_its_checks_unchecked():
    found = facts(broker=BrokerFacts("redis", "redis://h", error="TimeoutError: no answer"),
                  workers=Unchecked("the broker did not answer"))
    checks = by_code(found)
    assert checks["redis-eviction-policy"].status == NOT_CHECKED
    assert "no answer" in checks["version-drift"].reason
    assert checks["no-time-limit"].status == PASSED  # the app's own settings still count


def review_of(found: Facts, incomplete: str | None = None) -> Review:
    return Review(evaluate(found), "app proj", "redis://h", ["w1@h"], 0.5, 10.0, incomplete)


@pytest.mark.parametrize("found, incomplete, code", [
    (facts(), None, 0),
    (facts(safe_app(set_keys=frozenset())), None, 1),
    (facts(redis=RedisFacts("allkeys-lru", 10)), None, 2),
    (facts(), "the broker did not answer", 4),
    (facts(redis=RedisFacts("allkeys-lru", 10)), "the broker did not answer", 2),
    (facts(safe_app(set_keys=frozenset({"broker_connection_retry_on_startup"}))), None, 0),  # info only
])
def test_exit_codes(found, incomplete, code):
    assert exit_code(review_of(found, incomplete)) == code


def test_text_and_json():
    review = review_of(facts(redis=RedisFacts("allkeys-lru", 10)))
    text = render_text(review)
    assert "CRITICAL  redis-eviction-policy: Redis may evict queued tasks" in text and "\x1b[" not in text
    assert "\x1b[" in render_text(review, colour=True)
    document = json.loads(json.dumps(as_dict(review)))
    [finding] = document["findings"]
    assert set(finding) >= {"code", "severity", "seen", "why", "fix", "docs"}
    assert document["exit_code"] == 2 and document["summary"]["critical"] == 1


def test_reading_messages():
    assert eta_timestamp("2026-12-03T10:00:00+00:00") == eta_timestamp("2026-12-03T10:00:00")
    assert eta_timestamp("soon") is None and eta_timestamp(None) is None
    assert message_eta({"headers": {"eta": "1970-01-01T00:01:00+00:00"}}) == 60.0
    assert message_eta({"headers": {}}) is None and message_eta("x") is None
    assert unacked_entry(b'[{"headers": {}}, "", "celery"]') == ({"headers": {}}, "celery")
    assert unacked_entry(b"not json") is None
    report = {"ok": "software -> celery:5.4.0 (opalescent) kombu:5.4.2 py:3.11.7\n"}
    assert versions_from_report(report) == ("5.4.0", "5.4.2")
