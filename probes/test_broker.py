"""The broker and the result backend answer.

PYTEST_DONT_REWRITE: built-in probes fail with pytest.fail(message), so assertion
rewriting would only cost start-up time.
"""

from dataclasses import asdict

import pytest


@pytest.mark.probe(severity="critical", code="celery_broker_unreachable")
def test_broker_answers(probe_run, record, known):
    """The broker accepts a connection and answers within the deadline."""
    with known:
        check = probe_run.broker()
    record["broker"] = {**asdict(check), "url": probe_run.broker_url}
    if not check.reachable:
        pytest.fail(f"broker {probe_run.broker_url} did not answer: {check.error}", pytrace=False)


@pytest.mark.probe(severity="critical", code="celery_backend_unreachable")
def test_result_backend_answers(probe_run, record, note, known):
    """The result backend answers, so task results can be stored and read."""
    with known:
        check = probe_run.backend()
    record["backend"] = asdict(check)
    if not check.configured:
        note("celery_backend_not_configured", "no result backend is configured")
        pytest.skip("no result backend configured")
    if check.reachable is False:
        pytest.fail(f"result backend {check.backend} {probe_run.backend_url} did not answer: {check.error}",
                    pytrace=False)
