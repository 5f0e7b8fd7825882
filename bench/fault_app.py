"""The Celery app that bench/fault_matrix.py's workers run and every probe loads with ``-A``.

Its URLs come from the environment so one module serves every private redis-server the
matrix starts, and the RabbitMQ cases give it a default queue and control exchange of
their own. There is deliberately no default broker URL: an unset variable would make
Celery fall back to amqp://localhost:5672 with the shared names.
"""

from __future__ import annotations

import os
import time

from celery import Celery


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise RuntimeError(f"fault_app needs {name} (set by bench/fault_matrix.py)")
    return value


app = Celery("fault_app", broker=_required("FAULT_BROKER"), backend=os.environ.get("FAULT_BACKEND") or None)
app.conf.task_default_queue = os.environ.get("FAULT_DEFAULT_QUEUE") or "celery"
app.conf.control_exchange = os.environ.get("FAULT_CONTROL_EXCHANGE") or "celery"
app.conf.worker_prefetch_multiplier = 1
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True
if os.environ.get("FAULT_QUEUE_TYPE") == "quorum":  # Celery's examples/quorum-queues shape
    app.conf.task_default_queue_type = "quorum"
    app.conf.broker_transport_options = {"confirm_publish": True}
    app.conf.task_default_exchange_type = os.environ.get("FAULT_EXCHANGE_TYPE") or "direct"


if os.environ.get("FAULT_ROUTED_QUEUE"):  # Celery's examples/next-steps shape: a queue only task_routes names
    app.conf.task_routes = {"fault.add": {"queue": os.environ["FAULT_ROUTED_QUEUE"]}}


@app.task(name="fault.add")
def add(x: int, y: int) -> int:
    return x + y


if os.environ.get("FAULT_CONFIG_MODULE"):  # the "settings fail to load" row: read lazily, as Celery does
    app.config_from_object(os.environ["FAULT_CONFIG_MODULE"])


@app.task(name="fault.sleep")
def sleep(seconds: float) -> float:
    """Hold a pool process busy (bounded by the caller's argument)."""
    time.sleep(min(float(seconds), 60.0))
    return seconds
