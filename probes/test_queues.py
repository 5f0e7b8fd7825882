"""Watched queues are short enough, and every queue holding messages has a consumer."""

import pytest


def _summary(items, limit=10):
    text = ", ".join(items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


@pytest.mark.probe(severity="degraded", code="celery_queue_high")
def test_queues_below_threshold(probe_run, probe_settings, record, known):
    """Each watched queue holds fewer messages than its threshold (priority lists included)."""
    with known:
        depths = probe_run.queue_depths()
    record["queues"] = {
        name: {**depth.as_dict(), "threshold": probe_settings.threshold_for(name)}
        for name, depth in depths.items()
    }
    high = [
        f"{name}={depth.length} (threshold {probe_settings.threshold_for(name)})"
        for name, depth in depths.items()
        if depth.length >= probe_settings.threshold_for(name)
    ]
    if high:
        pytest.fail(f"queue backlog at or above threshold: {_summary(high)}", pytrace=False)


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
