"""Task runtimes per task type, from the workers' own task events, within their SLAs.

PYTEST_DONT_REWRITE: built-in probes fail with pytest.fail(message), so assertion
rewriting would only cost start-up time.
"""

import pytest

from celery_probe.probing.broker import describe_error
from celery_probe.probing.deadline import Starved
from celery_probe.probing.events import listen
from celery_probe.verdict.sla import describe_breach, runtime_stats

RESERVE = 0.2  # seconds of the deadline left after the window for the report


@pytest.mark.probe(severity="degraded", code="celery_task_sla_breach")
def test_task_runtimes_within_sla(probe_run, probe_settings, probe_deadline, record, note, known):
    """Listening ``--events-window`` seconds, no task type's p95 runtime exceeds its ``--task-sla``."""
    wanted = probe_settings.events_window
    if not wanted:
        pytest.skip("no --events-window given")
    with known:
        probe_run.require_broker()
    seconds = min(wanted, probe_deadline.remaining() - RESERVE)
    if seconds <= 0:
        with known:  # no evidence either way: unknown, not a breach
            raise Starved(probe_deadline.starvation("the events window had no time left"))
    try:
        window = listen(probe_run.app, seconds, exclude=probe_run.sent_task_ids())
    except Exception as exc:  # noqa: BLE001 - the broker went away during the window: one line, no traceback
        pytest.fail(f"events window cut short: {describe_error(exc)}", pytrace=False)
    stats = runtime_stats(window.runtimes, window.failed, probe_settings.task_sla)
    record["task_runtimes"] = {
        "window_s": window.listened_s, "requested_window_s": wanted, "events": window.events,
        "task_events": window.task_events,
        "unnamed": window.unnamed, "tasks": stats,
    }
    if window.skipped or window.task_events == 0:
        note("celery_task_events_missing",
             f"no task events received in {window.listened_s:g}s"
             + (f" ({window.skipped})" if window.skipped else "")
             + ": start workers with -E or enable task events (worker_send_task_events)")
        return
    if seconds < wanted:
        note("celery_events_window_short",
             f"listened {window.listened_s:g}s of the {wanted:g}s events window: earlier probes used the rest")
    breached = [describe_breach(name, entry) for name, entry in stats.items() if entry["breach"]]
    if breached:
        pytest.fail("task runtime over SLA: " + "; ".join(breached[:10]), pytrace=False)
