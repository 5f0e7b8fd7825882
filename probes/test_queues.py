"""Watched queues are short enough, and every queue holding messages has a consumer.

PYTEST_DONT_REWRITE: built-in probes fail with pytest.fail(message), so assertion
rewriting would only cost start-up time.
"""

import pytest

from celery_probe.probing.backlog import describe_top
from celery_probe.probing.measurements import KnownFailure


def _summary(items, limit=10):
    text = ", ".join(items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


@pytest.mark.probe(severity="degraded", code="celery_queue_high")
def test_queues_below_threshold(probe_run, probe_settings, record, note, known):
    """Each watched queue holds fewer messages than its threshold (priority lists included)."""
    if probe_run.watch.unlisted_routers:
        note(
            "celery_routes_unlisted",
            f"task_routes has {_summary(probe_run.watch.unlisted_routers, 3)}: the queues it "
            "sends tasks to cannot be listed in advance, so they are watched only where a "
            "worker consumes them; name them with -Q to watch them always",
        )
    with known:
        depths = probe_run.queue_depths()
    if probe_run.watch.consumed_added:
        record["watched_from_workers"] = list(probe_run.watch.consumed_added)
    record["queues"] = {
        name: {**depth.as_dict(), "threshold": probe_settings.threshold_for(name)}
        for name, depth in depths.items()
    }
    high = [name for name, depth in depths.items() if depth.length >= probe_settings.threshold_for(name)]
    if high:
        tops = _top_tasks(probe_run, high)
        high = [
            f"{name}={depths[name].length} (threshold {probe_settings.threshold_for(name)}"
            + (f"; {tops[name]})" if tops.get(name) else ")")
            for name in high
        ]
        pytest.fail(f"queue backlog at or above threshold: {_summary(high)}", pytrace=False)


def _top_tasks(probe_run, queues):
    """``{queue: "top tasks in N sampled: …"}`` for the high queues, when a sample is available."""
    if probe_run.settings.backlog_sample <= 0:
        return {}
    try:
        backlog = probe_run.backlog()
    except KnownFailure:
        return {}  # reported by test_backlog_by_task
    return {name: describe_top(backlog.queues.get(name)) for name in queues} if backlog.available else {}


@pytest.mark.probe(severity="critical", code="celery_queue_unconsumed")
def test_queues_with_backlog_have_consumers(probe_run, record, known):
    """No watched queue holds messages that no worker consumes."""
    with known:
        depths = probe_run.queue_depths()
        consumers = probe_run.consumers()
    record["consumers"] = consumers
    orphaned = [
        f"{name}={depth.length}"
        for name, depth in depths.items()
        if depth.length > 0 and not consumers.get(name) and not depth.broker_consumers
    ]
    if orphaned:
        pytest.fail(f"messages waiting where no worker consumes: {_summary(orphaned)}", pytrace=False)
