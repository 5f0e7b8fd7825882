"""Workers answer ping, as many as expected, and say what they are doing.

PYTEST_DONT_REWRITE: built-in probes fail with pytest.fail(message), so assertion
rewriting would only cost start-up time.
"""

from dataclasses import asdict

import pytest


@pytest.mark.probe(severity="critical", code="celery_worker_down")
def test_workers_answer_ping(probe_run, record, known):
    """At least one worker answers a remote-control ping."""
    with known:
        result = probe_run.ping()
    record["ping"] = {
        "workers": [asdict(reply) for reply in result.replies],
        "waited_ms": result.waited_ms,
        "expected": result.expected,
    }
    if not result.replies:
        with known:  # workers alive that refuse the probe's messages: unknown, not down
            probe_run.refusal()
        pytest.fail(
            f"no worker answered ping (listened {result.waited_ms:.0f} ms)", pytrace=False
        )


@pytest.mark.probe(severity="degraded", code="celery_workers_missing")
def test_expected_workers_answer(probe_run, probe_settings, known):
    """As many workers answer as ``--expect-workers`` says should."""
    expected = probe_settings.expect_workers
    if expected is None:
        pytest.skip("no --expect-workers given")
    with known:
        answered = probe_run.ping().names
    if not answered:
        pytest.skip("no worker answered at all: reported as celery_worker_down")
    if len(answered) < expected:
        pytest.fail(
            f"{len(answered)} of {expected} expected workers answered: {', '.join(answered)}",
            pytrace=False,
        )


@pytest.mark.probe(severity="degraded", code="celery_worker_unresponsive")
def test_worker_activity(probe_run, record, known):
    """Every worker that answered ping also reports its active, reserved and scheduled tasks."""
    with known:
        names = probe_run.ping().names
    if not names:
        pytest.skip("no worker answered ping")
    with known:
        activity = probe_run.activity()
    record["activity"] = {
        name: {
            "active": activity.active.get(name),
            "reserved": activity.reserved.get(name),
            "scheduled": activity.scheduled.get(name),
            "queues": activity.queues.get(name, []),
            "concurrency": activity.concurrency.get(name),
        }
        for name in names
    }
    silent = [name for name in names if name not in activity.answered]
    if silent:
        pytest.fail(f"answered ping but not inspect: {', '.join(silent)}", pytrace=False)
