"""The Celery app the test suite's workers run, configured from the environment."""

import json
import os
import time

from celery import Celery

app = Celery(
    "probe_test_app",
    broker=os.environ.get("PROBE_TEST_BROKER", "memory://"),
    backend=os.environ.get("PROBE_TEST_BACKEND") or None,
)
app.conf.broker_transport_options = json.loads(os.environ.get("PROBE_TEST_TRANSPORT_OPTIONS") or "{}")
app.conf.result_backend_transport_options = json.loads(
    os.environ.get("PROBE_TEST_BACKEND_TRANSPORT_OPTIONS") or "{}"
)
app.conf.worker_prefetch_multiplier = int(os.environ.get("PROBE_TEST_PREFETCH", "1"))
app.conf.worker_hijack_root_logger = False
# Tests on a shared RabbitMQ use queue and control-exchange names of their own, so they
# neither see nor disturb anybody else's workers.
app.conf.task_default_queue = os.environ.get("PROBE_TEST_DEFAULT_QUEUE") or "celery"
app.conf.control_exchange = os.environ.get("PROBE_TEST_CONTROL_EXCHANGE") or "celery"
app.conf.event_exchange = os.environ.get("PROBE_TEST_EVENT_EXCHANGE") or "celeryev"
app.conf.broker_connection_retry_on_startup = True
if os.environ.get("PROBE_TEST_QUEUES"):
    from kombu import Queue

    app.conf.task_queues = [Queue(name) for name in os.environ["PROBE_TEST_QUEUES"].split(",")]


@app.task(name="probe_test.sleep")
def sleep(seconds: float) -> float:
    """Hold a pool process busy (bounded by the caller's argument)."""
    time.sleep(seconds)
    return seconds
