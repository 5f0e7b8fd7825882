"""Which tasks wait in each watched queue: a bounded sample of the queue head, by task name.

PYTEST_DONT_REWRITE: built-in probes fail with pytest.fail(message), so assertion
rewriting would only cost start-up time.
"""

import pytest

from celery_probe.probing.measurements import KnownFailure


@pytest.mark.probe(severity="degraded", code="celery_backlog_unreadable")
def test_backlog_by_task(probe_run, probe_settings, record, known):
    """The head of each watched queue is sampled and its messages counted by task name.

    On RabbitMQ the messages waiting out a countdown in the native delayed delivery queues
    (``celery_delayed_*``) are counted too, as delayed backlog. Brokers whose queues cannot
    be read without taking messages (RabbitMQ, SQS…) have no sample by design: the probe
    skips without a note, since there is nothing to fix.
    """
    with known:  # the broker or the queue lengths are already known to be unavailable
        probe_run.queue_depths()
    try:
        delayed = probe_run.delayed()
    except KnownFailure as exc:
        pytest.fail(f"delayed delivery queues could not be read: {exc}", pytrace=False)
    if delayed is not None:
        record["delayed"] = delayed.as_dict()
    if probe_settings.backlog_sample <= 0:
        pytest.skip("backlog sampling is off (--backlog-sample 0)")
    try:
        backlog = probe_run.backlog()
    except KnownFailure as exc:
        pytest.fail(f"queue heads could not be read: {exc}", pytrace=False)
    if not backlog.available:
        pytest.skip(backlog.reason or "per-task backlog is not available")
    record["backlog"] = {name: queue.as_dict() for name, queue in backlog.queues.items()}
