"""A Celery app whose RabbitMQ queues cannot be declared the default way.

A quorum queue and an ``x-max-priority`` queue refuse a second declaration with other
arguments (PRECONDITION_FAILED), and ``keyed`` is bound to an exchange of its own with a
routing key that differs from its name. The worker declares them exactly like this; a
probe must reach them without declaring anything. Broker and backend come from the
environment (a RabbitMQ vhost of the test's own).
"""

import os

from celery import Celery
from kombu import Exchange, Queue

app = Celery(
    "topology_app",
    broker=os.environ.get("PROBE_TEST_BROKER", "memory://"),
    backend=os.environ.get("PROBE_TEST_BACKEND") or None,
)
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True
app.conf.task_queues = [
    Queue("quorum", Exchange("quorum", "direct"), routing_key="quorum",
          queue_arguments={"x-queue-type": "quorum"}),
    Queue("prio", Exchange("prio", "direct"), routing_key="prio",
          queue_arguments={"x-max-priority": 10}),
    Queue("keyed", Exchange("keyed-exchange", "direct"), routing_key="keyed-key"),
]
app.conf.task_default_queue = "quorum"
