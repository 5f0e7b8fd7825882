"""The test suite's app with worker health files: probe_test_app plus one ``install`` line.

The folder comes from the worker's ``--probe-dir`` (or ``CELERY_PROBE_WORKER_DIR``), the
writing interval from ``CELERY_PROBE_WORKER_INTERVAL``, as an operator's app would have them.
"""

import os

from probe_test_app import app, sleep

import celery_probe.worker

if os.environ.get("HEALTH_APP_MAX_RETRIES"):  # a worker that gives up reconnecting
    app.conf.broker_connection_max_retries = int(os.environ["HEALTH_APP_MAX_RETRIES"])

celery_probe.worker.install(app)

__all__ = ["app", "sleep"]
