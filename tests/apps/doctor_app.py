"""A Celery app for ``celery-probe doctor`` tests, configured from the environment.

``DOCTOR_SAFE=1`` gives it what production needs (time limits, the connection-loss settings);
without it those are left unset. ``DOCTOR_VISIBILITY_TIMEOUT``, ``DOCTOR_ACKS_LATE`` and
``DOCTOR_TIME_LIMIT`` shape the visibility-timeout cases; ``PROBE_TEST_*`` point it at the
test's own broker, queue and control exchange, as for probe_test_app.
"""

import os

from celery import Celery

app = Celery(
    "doctor_app",
    broker=os.environ.get("PROBE_TEST_BROKER", "memory://"),
    backend=os.environ.get("PROBE_TEST_BACKEND") or None,
)
app.conf.worker_hijack_root_logger = False
app.conf.task_default_queue = os.environ.get("PROBE_TEST_DEFAULT_QUEUE") or "celery"
app.conf.control_exchange = os.environ.get("PROBE_TEST_CONTROL_EXCHANGE") or "celery"
app.conf.event_exchange = os.environ.get("PROBE_TEST_EVENT_EXCHANGE") or "celeryev"
if os.environ.get("DOCTOR_SAFE"):
    app.conf.task_time_limit = 300
    app.conf.task_soft_time_limit = 240
    app.conf.worker_cancel_long_running_tasks_on_connection_loss = True
    app.conf.broker_connection_retry_on_startup = True
if os.environ.get("DOCTOR_VISIBILITY_TIMEOUT"):
    app.conf.broker_transport_options = {"visibility_timeout": int(os.environ["DOCTOR_VISIBILITY_TIMEOUT"])}
if os.environ.get("DOCTOR_ACKS_LATE"):
    app.conf.task_acks_late = True
if os.environ.get("DOCTOR_TIME_LIMIT"):
    app.conf.task_time_limit = int(os.environ["DOCTOR_TIME_LIMIT"])


@app.task(name="doctor.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="doctor.limited", time_limit=30, soft_time_limit=20)
def limited() -> str:
    return "done"
