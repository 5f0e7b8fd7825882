"""A Celery app that routes tasks with ``task_routes`` to queues no ``task_queues`` names.

Like Celery's ``examples/next-steps``: the routes are the only place the queues appear.
Every form Celery accepts is used once: an exact task name with a dict route, a glob
with a plain queue name, and a compiled regex in a list of pairs whose route is a kombu
``Queue``. ``PROBE_TEST_ROUTE_QUEUES`` (``math=NAME,media=NAME,feeds=NAME``) renames the
queues (tests on a shared RabbitMQ use names of their own); ``PROBE_TEST_ROUTER_FUNCTION``
adds a router function, whose queues nobody can list in advance.
"""

import os
import re

from celery import Celery
from kombu import Queue

app = Celery(
    "routed_app",
    broker=os.environ.get("PROBE_TEST_BROKER", "memory://"),
    backend=os.environ.get("PROBE_TEST_BACKEND") or None,
)
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True
app.conf.task_default_queue = os.environ.get("PROBE_TEST_DEFAULT_QUEUE") or "celery"
app.conf.control_exchange = os.environ.get("PROBE_TEST_CONTROL_EXCHANGE") or "celery"


def queue_names(raw: str) -> dict[str, str]:
    names = {"math": "math", "media": "media", "feeds": "feeds"}
    names.update(item.split("=", 1) for item in raw.split(",") if "=" in item)
    return names


def route_reports(name, args, kwargs, options, task=None, **kw):
    """A router function: decides per call, so its queues cannot be listed."""
    return {"queue": "reports"} if name.startswith("routed.report") else None


def build_routes(names: dict[str, str], with_function: bool = False) -> tuple:
    routes = (
        {"routed.add": {"queue": names["math"]}},
        {"routed.render.*": names["media"]},
        [(re.compile(r"routed\.feed\..*"), {"queue": Queue(names["feeds"])})],
    )
    return (*routes, route_reports) if with_function else routes


app.conf.task_routes = build_routes(
    queue_names(os.environ.get("PROBE_TEST_ROUTE_QUEUES", "")),
    with_function=bool(os.environ.get("PROBE_TEST_ROUTER_FUNCTION")),
)
