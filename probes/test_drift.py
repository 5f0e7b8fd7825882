"""The workers that answer are the expected ones, consuming the queues they should.

PYTEST_DONT_REWRITE: built-in probes fail with pytest.fail(message), so assertion
rewriting would only cost start-up time.
"""

import pytest

from celery_probe.verdict.drift import consumer_drift, missing_names, summary


@pytest.mark.probe(severity="degraded", code="celery_worker_missing_by_name")
def test_expected_worker_names_answer(probe_run, probe_settings, record, known):
    """Every ``--expect-worker-name`` pattern matches a worker that answered ping."""
    patterns = probe_settings.expect_worker_names
    if not patterns:
        pytest.skip("no --expect-worker-name given")
    with known:
        names = probe_run.ping().names
    if not names:
        pytest.skip("no worker answered at all: reported as celery_worker_down")
    missing = missing_names(patterns, names)
    record["expected_names"] = {p: p not in missing for p in patterns}
    if missing:
        pytest.fail(
            f"no worker answered for {', '.join(missing)} (answered: {', '.join(names)})",
            pytrace=False,
        )


@pytest.mark.probe(severity="degraded", code="celery_worker_drift")
def test_workers_consume_expected_queues(probe_run, probe_settings, record, known):
    """Workers matching an ``--expect-consumer QUEUE=PATTERN`` consume QUEUE, and no others do."""
    rules = probe_settings.expect_consumers
    if not rules:
        pytest.skip("no --expect-consumer given")
    with known:
        names = probe_run.ping().names
    if not names:
        pytest.skip("no worker answered at all: reported as celery_worker_down")
    with known:
        activity = probe_run.activity()
    consumed = {name: activity.queues.get(name, []) for name in names if name in activity.answered}
    findings = consumer_drift(rules, consumed)
    record["drift"] = [finding.as_dict() for finding in findings]
    if findings:
        pytest.fail(f"queue membership drift: {summary(findings)}", pytrace=False)
