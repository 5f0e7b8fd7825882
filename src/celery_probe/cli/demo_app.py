"""The Celery app of ``celery-probe demo``: configured entirely from the environment."""

from __future__ import annotations

import json
import os

from celery import Celery

app = Celery(
    "celery_probe_demo",
    broker=os.environ.get("CELERY_PROBE_DEMO_BROKER", "redis://127.0.0.1:6379/15"),
    backend=os.environ.get("CELERY_PROBE_DEMO_BACKEND") or None,
)
app.conf.broker_transport_options = json.loads(os.environ.get("CELERY_PROBE_DEMO_TRANSPORT_OPTIONS", "{}"))
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True
