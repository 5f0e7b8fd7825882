"""Each ``--endpoint`` health URL answers 2xx JSON whose status is not ``down``."""

from dataclasses import asdict

import pytest

from celery_probe.endpoint import check_endpoint
from celery_probe.urls import redact_url


@pytest.mark.probe(severity="degraded", code="celery_endpoint_down")
def test_endpoint_healthy(endpoint_url, probe_deadline, record):
    """The health endpoint answers in time, with JSON, and does not report ``down``."""
    if endpoint_url is None:
        pytest.skip("no --endpoint given")
    # An endpoint may take at most 40% of the deadline, so a hanging one leaves the round
    # trip (which runs after it) the time it needs.
    cap = max(0.5, probe_deadline.total * 0.4)
    result = check_endpoint(endpoint_url, timeout=max(0.05, probe_deadline.within(cap)))
    result.url = redact_url(result.url)
    record["endpoint"] = asdict(result)
    if not result.ok:
        pytest.fail(f"{result.url}: {result.error}", pytrace=False)
