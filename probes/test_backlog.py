"""Which tasks wait in each watched queue: a bounded sample of the queue head, by task name.

PYTEST_DONT_REWRITE: built-in probes fail with pytest.fail(message), so assertion
rewriting would only cost start-up time.
"""

import pytest

from celery_probe.session import KnownFailure


@pytest.mark.probe(severity="degraded", code="celery_backlog_unreadable")
def test_backlog_by_task(probe_run, probe_settings, record, note, known):
    """The head of each watched queue is sampled and its messages counted by task name."""
    if probe_settings.backlog_sample <= 0:
        pytest.skip("backlog sampling is off (--backlog-sample 0)")
    with known:  # the broker or the queue lengths are already known to be unavailable
        probe_run.queue_depths()
    try:
        backlog = probe_run.backlog()
    except KnownFailure as exc:
        pytest.fail(f"queue heads could not be read: {exc}", pytrace=False)
    if not backlog.available:
        note("celery_backlog_unavailable", backlog.reason or "per-task backlog is not available")
        pytest.skip(backlog.reason or "per-task backlog is not available")
    record["backlog"] = {name: queue.as_dict() for name, queue in backlog.queues.items()}
