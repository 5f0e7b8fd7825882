"""A Celery app that ships celery-probe's beat tick, configured from the environment."""

import os

from celery import Celery

from celery_probe.probing.beat import DEFAULT_KEY, install_beat_tick

app = Celery(
    "beat_test_app",
    broker=os.environ.get("PROBE_TEST_BROKER", "memory://"),
    backend=os.environ.get("PROBE_TEST_BACKEND") or None,
)
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True
if os.environ.get("PROBE_TEST_BEAT_SCHEDULER"):
    app.conf.beat_scheduler = os.environ["PROBE_TEST_BEAT_SCHEDULER"]

install_beat_tick(
    app,
    interval=float(os.environ.get("PROBE_TEST_BEAT_INTERVAL", "1")),
    key=os.environ.get("PROBE_TEST_BEAT_KEY") or DEFAULT_KEY,
)
