"""The Celery app that bench_run.py's worker runs and every timed command loads with ``-A``.

It reads its URLs from the environment so one module serves any private redis-server
the benchmark starts. There is deliberately no default URL: an unset variable would make
Celery fall back to amqp://localhost:5672, i.e. some shared broker on the machine.
It keeps Celery's default transport options so ``celery inspect ping`` is timed exactly
as an operator would see it.
"""

from __future__ import annotations

import os

from celery import Celery


def _required(name: str) -> str:
    """The URL in ``name``, or a clear error instead of Celery's silent localhost default."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise RuntimeError(f"bench_app needs {name} (set by bench/bench_run.py)")
    return value


app = Celery("bench_app", broker=_required("BENCH_BROKER"), backend=_required("BENCH_BACKEND"))
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True
