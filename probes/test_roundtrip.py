"""A real task goes through every watched queue and its result comes back.

PYTEST_DONT_REWRITE: built-in probes fail with pytest.fail(message), so assertion
rewriting would only cost start-up time.
"""

import pytest

from celery_probe.probing.deadline import Starved


@pytest.mark.probe(severity="critical", code="celery_roundtrip_failed")
def test_task_roundtrip(probe_run, record, note, known):
    """``celery.accumulate`` sent through each queue returns its argument within the deadline."""
    if not probe_run.has_backend():
        note(
            "celery_roundtrip_unconfirmed",
            "no result backend is configured, so the task round trip cannot be confirmed",
        )
        pytest.skip("no result backend: round trip cannot be confirmed")
    with known:
        trips = probe_run.trips()
    if probe_run.rotation:
        turn = probe_run.rotation
        record["roundtrip_rotation"] = turn
        note(
            "celery_roundtrip_rotating",
            f"round trip through {turn['sent']} of {turn['consumed']} consumed queues this run; "
            f"the queues take turns, each one every {turn['runs_to_cover_all']} runs",
        )
    record["roundtrip"] = {
        t.queue: {"latency_ms": t.latency_ms, "error": t.error, "saturated": t.saturated,
                  "unconfirmed": t.unconfirmed}
        for t in trips
    }
    failed = [f"{t.queue}: {t.error}" for t in trips
              if not t.ok and not t.saturated and not t.unconfirmed and not t.starved]
    if failed:
        pytest.fail("round trip failed for " + "; ".join(failed[:10]), pytrace=False)
    starved = [t for t in trips if t.starved]
    if starved:
        with known:  # no evidence either way: the verdict is unknown, not down
            raise Starved(f"round trip through {', '.join(t.queue for t in starved[:10])}: {starved[0].starved}")


@pytest.mark.probe(severity="degraded", code="celery_workers_saturated")
def test_busy_queues_still_drain(probe_run, known):
    """A round trip that failed only because every consumer was busy, or a backlog stood ahead."""
    if not probe_run.has_backend():
        pytest.skip("no result backend")
    with known:
        trips = probe_run.trips()
    behind = [f"{t.queue}: {t.error} ({t.saturated})" for t in trips if not t.ok and t.saturated]
    if behind:
        pytest.fail("work waits behind busy workers: " + "; ".join(behind[:10]), pytrace=False)


@pytest.mark.probe(severity="error", code="celery_backend_mismatch")
def test_roundtrip_reaches_this_backend(probe_run, known):
    """A round trip that did not come back because its result goes where this probe does not read.

    The workers store results in another backend (``--backend`` given to the probe only),
    in none, or in a relative sqlite file of their own directory: the task may well have
    run, so the round trip is unconfirmed (``unknown``), not failed.
    """
    if not probe_run.has_backend():
        pytest.skip("no result backend")
    with known:
        trips = probe_run.trips()
    elsewhere = [f"{t.queue}: {t.unconfirmed}" for t in trips if not t.ok and t.unconfirmed]
    if elsewhere:
        pytest.fail("round trip not confirmed: " + "; ".join(elsewhere[:10]), pytrace=False)


@pytest.mark.probe(severity="degraded", code="celery_roundtrip_slow")
def test_roundtrip_fast(probe_run, probe_settings, known):
    """Every round trip completes within ``--roundtrip-slow`` seconds."""
    if not probe_run.has_backend():
        pytest.skip("no result backend")
    with known:
        trips = probe_run.trips()
    limit_ms = probe_settings.roundtrip_slow * 1000
    slow = [f"{t.queue}={t.latency_ms:.0f} ms" for t in trips if t.ok and t.latency_ms > limit_ms]
    if slow:
        pytest.fail(f"round trip slower than {limit_ms:.0f} ms: {', '.join(slow[:10])}", pytrace=False)
