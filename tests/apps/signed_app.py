"""A Celery app that signs its messages, as Celery's ``examples/security`` does.

``setup_security()`` registers the ``auth`` serializer and disables every other decoder,
so its workers refuse any unsigned message: tasks and remote-control commands alike.
The key, certificate and certificate store are made by the test and named in
``PROBE_TEST_SECURITY_KEY``, ``PROBE_TEST_SECURITY_CERT`` and ``PROBE_TEST_SECURITY_STORE``.
"""

import os

from celery import Celery

app = Celery(
    "signed_app",
    broker=os.environ.get("PROBE_TEST_BROKER", "memory://"),
    backend=os.environ.get("PROBE_TEST_BACKEND") or None,
)
app.conf.update(
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_default_queue=os.environ.get("PROBE_TEST_DEFAULT_QUEUE") or "celery",
    control_exchange=os.environ.get("PROBE_TEST_CONTROL_EXCHANGE") or "celery",
    security_key=os.environ.get("PROBE_TEST_SECURITY_KEY", ""),
    security_certificate=os.environ.get("PROBE_TEST_SECURITY_CERT", ""),
    security_cert_store=os.environ.get("PROBE_TEST_SECURITY_STORE", ""),
    security_digest="sha256",
    task_serializer="auth",
    event_serializer="auth",
    accept_content=["auth"],
    result_accept_content=["json"],
)
app.setup_security()
