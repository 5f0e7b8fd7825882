"""celery-exporter's series from captured verdicts: names, labels, values, and honest absence."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from celery_probe.present.exporter_compat import (
    FORGET_AFTER_S,
    exporter_families,
    exporter_hostname,
    pinged,
    remember_workers,
)
from celery_probe.present.metrics import render
from tests.support.reports import verdict


def samples(families: list[Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the rendered exposition, parsed back by prometheus_client's own parser."""
    text = render(families).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_hostname_is_the_part_after_the_at_sign_as_celery_exporter_labels_it() -> None:
    assert exporter_hostname("celery@web-1") == "web-1"
    assert exporter_hostname("gen531@web-1.example") == "web-1.example"
    assert exporter_hostname("no-at-sign") == "no-at-sign"


def test_a_healthy_verdict_gives_every_offered_series() -> None:
    got = samples(exporter_families(verdict("queue_high_saturated")))
    assert got[("celery_worker_up", (("hostname", "vm"),))] == 1.0
    assert got[("celery_worker_tasks_active", (("hostname", "vm"),))] == 1.0
    assert got[("celery_queue_length", (("queue_name", "bulk"),))] == 129.0
    assert got[("celery_queue_length", (("queue_name", "celery"),))] == 0.0
    assert got[("celery_active_consumer_count", (("queue_name", "bulk"),))] == 1.0
    assert got[("celery_active_worker_count", (("queue_name", "bulk"),))] == 1.0
    assert got[("celery_active_process_count", (("queue_name", "bulk"),))] == 1.0


def test_two_workers_of_one_host_share_its_label_and_keep_the_exposition_valid() -> None:
    got = samples(exporter_families(verdict("healthy_two_workers")))
    assert [k for k in got if k[0] == "celery_worker_up"] == [("celery_worker_up", (("hostname", "vm"),))]
    assert got[("celery_active_worker_count", (("queue_name", "celery"),))] == 2.0
    assert got[("celery_active_process_count", (("queue_name", "celery"),))] == 2.0
    assert got[("celery_active_consumer_count", (("queue_name", "celery"),))] == 2.0


def test_a_remembered_worker_that_no_longer_answers_is_down_when_ping_ran() -> None:
    dead = verdict("no_worker")
    assert pinged(dead)
    got = samples(exporter_families(dead, remembered=["celery@gone-host"]))
    assert got[("celery_worker_up", (("hostname", "gone-host"),))] == 0.0
    assert got[("celery_active_consumer_count", (("queue_name", "celery"),))] == 0.0


def test_a_broker_that_did_not_answer_says_nothing_about_the_workers() -> None:
    for name in ("broker_refused", "broker_frozen"):
        unreachable = verdict(name)
        assert not pinged(unreachable)
        got = samples(exporter_families(unreachable, remembered=["celery@web-1"]))
        assert not [k for k in got if k[0].startswith("celery_worker_")], name


def test_memory_stamps_answers_keeps_silent_workers_and_forgets_them_in_time() -> None:
    healthy = verdict("healthy_two_workers")
    memory = remember_workers({}, healthy, now=1000.0)
    assert memory == {"alpha@vm": 1000.0, "beta@vm": 1000.0}
    later = remember_workers(memory, verdict("no_worker"), now=1000.0 + FORGET_AFTER_S)
    assert later == memory  # silent, not yet forgotten
    assert remember_workers(later, verdict("no_worker"), now=1001.0 + FORGET_AFTER_S) == {}


def test_a_verdict_without_worker_evidence_stamps_nobody_and_forgets_nobody_early() -> None:
    memory = {"alpha@vm": 1000.0}
    assert remember_workers(memory, verdict("broker_refused"), now=1010.0) == memory


def test_extra_labels_reach_every_series() -> None:
    got = samples(exporter_families(verdict("queue_high_saturated"), labels={"target": "eu"}))
    assert got and all(dict(labels).get("target") == "eu" for _name, labels in got)


def test_the_shipped_dashboard_reads_only_series_that_celery_probe_exposes() -> None:
    import json
    import re

    from celery_probe.present.metrics import HELP as OWN
    from tests.support.environment import ROOT

    dashboard = json.loads((ROOT / "docs/deploy/grafana/celery-probe-dashboard.json").read_text())
    exposed = {*OWN, *(f"{name}_total" for name in ("celery_probe_runs", "celery_probe_runs_killed"))}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 14
    for expr in exprs:
        names = set(re.findall(r"\b(celery_probe[a-z_]*)\b", expr))
        assert names and names <= exposed, (expr, names - exposed)
