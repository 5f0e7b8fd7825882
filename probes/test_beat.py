"""Celery beat is scheduling: its tick ran recently (and redbeat's schedule is not overdue).

PYTEST_DONT_REWRITE: built-in probes fail with pytest.fail(message), so assertion
rewriting would only cost start-up time.
"""

import pytest

from celery_probe.probing.beat import judge_beat


@pytest.mark.probe(severity="critical", code="celery_beat_stale")
def test_beat_is_scheduling(probe_run, probe_settings, record, note, known):
    """The last beat tick is younger than ``--beat-interval`` × ``--beat-grace``."""
    interval = probe_settings.beat_interval
    if interval is None:
        pytest.skip("beat checking is off (no --beat-interval)")
    with known:
        state = probe_run.beat()
    record["beat"] = {**state.as_dict(), "interval_s": interval, "grace": probe_settings.beat_grace}
    if not state.available:
        note("celery_beat_unavailable", f"beat health cannot be checked: {state.reason}")
        pytest.skip(state.reason or "beat health cannot be checked")
    problem = judge_beat(state, interval, probe_settings.beat_grace)
    if problem is None:
        return
    # The tick is run by a worker: with none answering, a stale tick says nothing about beat.
    with known:
        probe_run.require_workers()
    pytest.fail(problem, pytrace=False)
