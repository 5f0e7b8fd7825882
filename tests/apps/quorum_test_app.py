"""A Celery app shaped like Celery's examples/quorum-queues, configured from the environment.

The default queue is a RabbitMQ quorum queue, so the worker turns global QoS off and its
prefetch count is static: tasks with a countdown that it holds until their time fill it.
``PROBE_TEST_EXCHANGE_TYPE=topic`` makes the default exchange a topic exchange, with which
Celery 5.5+ routes countdown tasks through RabbitMQ's native delayed delivery queues
(``celery_delayed_0`` .. ``celery_delayed_27``) instead.
"""

import os

from celery import Celery

app = Celery(
    "quorum_test_app",
    broker=os.environ.get("PROBE_TEST_BROKER", "memory://"),
    backend=os.environ.get("PROBE_TEST_BACKEND") or None,
)
app.conf.task_default_queue_type = "quorum"
app.conf.broker_transport_options = {"confirm_publish": True}
app.conf.task_default_exchange_type = os.environ.get("PROBE_TEST_EXCHANGE_TYPE") or "direct"
app.conf.worker_prefetch_multiplier = 1
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True


@app.task(name="quorum_test.later")
def later(value: str) -> str:
    """Sent with a countdown: the worker holds it until its time comes."""
    return value
