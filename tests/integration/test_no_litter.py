"""No litter: a thousand probe runs leave the broker and the result backend as they found them.

tests/integration/test_run_healthy.py::TestNoLitter proves it for ten real `celery-probe run` processes.
A thousand processes would take about eight minutes, so here the probe session is driven
in-process instead, exactly as one run drives it: a fresh app from
:func:`celery_probe.probing.app.build_app` (so fresh reply-queue names, as a new process has),
:class:`celery_probe.probing.measurements.Measurements` measuring broker, ping, activity, queue depths and
a round trip through a real worker, then ``close()``; on the main thread, so the deadline
alarms work as in a run.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from celery_probe.config.settings import Settings, resolve_settings
from celery_probe.probing.app import build_app
from celery_probe.probing.deadline import Deadline
from celery_probe.probing.measurements import Measurements
from tests.support.environment import redis_state

RUNS = 1000
RABBITMQ_RUNS = 300  # each run is as cheap, but the listing below costs a rabbitmqctl call


def probe_once(settings: Settings, control_exchange: str | None = None, apps: list[Any] | None = None) -> None:
    """One probe session, start to close; the app is added to ``apps`` before it is used."""
    app = build_app(settings)
    if control_exchange:
        app.conf.control_exchange = control_exchange
    if apps is not None:
        apps.append(app)
    run = Measurements(settings, app, Deadline(settings.deadline))
    try:
        assert run.broker().reachable
        assert run.ping().names
        run.activity()
        run.queue_depths()
        trips = run.trips()
        assert trips and all(trip.ok for trip in trips), [trip.error for trip in trips]
    finally:
        run.close()
        app.close()


@pytest.mark.redis_only
def test_a_thousand_runs_leave_redis_as_it_was(target, start_worker, tmp_path):
    start_worker(target.env())
    settings = resolve_settings({"broker": target.broker_url, "backend": target.backend_url, "expect_workers": "1",
                                 "deadline": "5", "report_dir": str(tmp_path)}, environ={}, pyproject=False)
    probe_once(settings)  # the first run creates what every run shares (kombu's binding sets)
    before = redis_state(target.redis)
    for _ in range(RUNS):
        probe_once(settings)
    after = redis_state(target.redis)
    changed = {key: (before.get(key), after.get(key)) for key in before.keys() | after.keys()
               if before.get(key) != after.get(key)}
    assert changed == {}, dict(list(changed.items())[:10])
    assert not [key for _db, key in after if key.startswith("celery-task-meta-")]


def rabbitmq_queues() -> set[str]:
    listed = subprocess.run(["rabbitmqctl", "list_queues", "name", "-q"], capture_output=True, text=True,
                            timeout=60, check=True).stdout.split()
    return {name for name in listed if name != "name"}


@pytest.mark.rabbitmq_only
def test_runs_leave_no_queue_on_rabbitmq(target, start_worker, tmp_path):
    """The rpc:// reply queue and the pidbox reply queue of every run are gone afterwards."""
    start_worker(target.env())
    settings = resolve_settings({"broker": target.broker_url, "backend": target.backend_url,
                                 "queues": target.default_queue, "expect_workers": "1", "deadline": "5",
                                 "report_dir": str(tmp_path)}, environ={}, pyproject=False)
    apps: list[Any] = []
    try:
        probe_once(settings, target.control_exchange, apps)
        ours_before = {q for q in rabbitmq_queues() if target.suffix in q}
        for _ in range(RABBITMQ_RUNS):
            probe_once(settings, target.control_exchange, apps)
        after = rabbitmq_queues()
        reply_queues = [app.backend.binding.name for app in apps]  # uuid-named from each app's identity
        assert len(set(reply_queues)) > 1  # fresh names, as fresh processes would have
        assert sorted(set(reply_queues) & after) == []
        # The worker's own queues (its task queue and pidbox) are all that carry this test's names.
        assert {q for q in after if target.suffix in q} == ours_before
    finally:  # a failure must not leave this test's queues on the shared broker
        delete_queues(target.broker_url, {app.backend.binding.name for app in apps})


def delete_queues(url: str, names: set[str]) -> None:
    from kombu import Connection

    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        for name in names:
            try:
                channel.queue_delete(name)
            except Exception:  # noqa: BLE001 - gone already, or not ours to delete: go on with a fresh channel
                channel = conn.channel()
