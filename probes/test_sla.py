"""Each queue with an SLA (``--sla QUEUE=DURATION``) has its round trip within it.

PYTEST_DONT_REWRITE: built-in probes fail with pytest.fail(message), so assertion
rewriting would only cost start-up time.
"""

import pytest

from celery_probe.verdict.sla import queue_slas


@pytest.mark.probe(severity="degraded", code="celery_sla_breach")
def test_roundtrip_within_sla(probe_run, probe_settings, record, note, known):
    """The round trip measured through each queue (no extra task) is within the queue's SLA."""
    rules = probe_settings.sla
    if not rules:
        pytest.skip("no --sla given")
    unwatched = [queue for queue, _seconds in rules if queue not in probe_run.queues]
    if unwatched:
        note("celery_sla_unwatched",
             f"SLA given for {', '.join(unwatched)}, not a watched queue: add -Q to measure it")
    if not probe_run.has_backend():
        pytest.skip("no result backend: round trip cannot be confirmed")
    with known:
        trips = probe_run.trips()
    # A failed round trip is reported by its own probe; here it is "not measured".
    judged = queue_slas({t.queue: t.latency_ms if t.ok else None for t in trips}, rules)
    record["sla"] = judged
    breached = [f"{queue} {info['roundtrip_ms']:.1f} ms > SLA {info['sla_ms']:g} ms"
                for queue, info in judged.items() if info["breach"]]
    if breached:
        pytest.fail("round trip over SLA: " + ", ".join(breached[:10]), pytrace=False)
