"""Each ``--endpoint`` health URL answers 2xx JSON whose status is not ``down``.

PYTEST_DONT_REWRITE: built-in probes fail with pytest.fail(message), so assertion
rewriting would only cost start-up time.
"""

from dataclasses import asdict

import pytest

from celery_probe.probing.endpoint import check_endpoint
from celery_probe.config.urls import redact_url
from celery_probe.net.http import HttpOptions, load

RESERVE = 0.25  # seconds of the deadline kept for the probes after this one


@pytest.mark.probe(severity="degraded", code="celery_endpoint_down")
def test_endpoints_healthy(probe_settings, probe_deadline, record):
    """Every health endpoint answers in time, with JSON, and does not report ``down``."""
    if not probe_settings.endpoints:
        pytest.skip("no --endpoint given")
    load()  # the HTTP client's import is not the endpoints' time
    # The round trip has run before this probe; all endpoints together may take at most 40%
    # of the deadline, and stop RESERVE seconds before its end, so a hanging one still lets
    # the probes after it run (and report) instead of finding the deadline used up.
    budget_end = probe_deadline.elapsed() + max(0.5, probe_deadline.total * 0.4)
    budget_end = min(budget_end, probe_deadline.total - RESERVE)
    results = []
    http = HttpOptions.from_settings(probe_settings)
    for url in probe_settings.endpoints:
        left = max(0.05, probe_deadline.within(budget_end - probe_deadline.elapsed()))
        result = check_endpoint(url, timeout=left, http=http)
        result.url = redact_url(result.url)
        results.append(result)
    record["endpoint"] = [asdict(result) for result in results]
    failed = [f"{result.url}: {result.error}" for result in results if not result.ok]
    if failed:
        pytest.fail("; ".join(failed[:5]), pytrace=False)
