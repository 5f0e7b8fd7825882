"""``get_celery_health()``: the classic Python entry point, safe to call from a web process.

The probes arm ``SIGALRM``, which only works on a main thread and would disturb a host
application, so the probe run happens in a child process (``celery-probe run``) with a
hard timeout. Broker URLs travel in the child's environment, never on its command line
where ``ps`` would show their passwords.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from celery_probe.verdict.mapper import seed_shape, unknown_verdict
from celery_probe.verdict.model import SeedShape, Verdict

if TYPE_CHECKING:
    from celery import Celery

PROCESS_SLACK = 3.0  # seconds beyond the deadline for interpreter start-up and the watchdog


def get_celery_health(
    timeout: float = 5,
    *,
    app: str | Celery | None = None,
    broker: str | None = None,
    backend: str | None = None,
    queues: Sequence[str] = (),
    expect_workers: int | None = None,
) -> dict[str, Any]:
    """Probe Celery and return ``worker_alive``, ``active_tasks``, ``scheduled_tasks``,
    ``queue_length``, ``last_heartbeat`` (a datetime or None) and ``status``.

    Unset targets fall back to ``CELERY_PROBE_*`` variables and ``pyproject.toml``, as for
    the CLI. A Celery app object is probed through its broker and backend URLs.
    """
    return _with_datetime(seed_shape(probe_verdict(
        timeout, app=app, broker=broker, backend=backend, queues=queues, expect_workers=expect_workers
    )))


def probe_verdict(
    timeout: float = 5,
    *,
    app: str | Celery | None = None,
    broker: str | None = None,
    backend: str | None = None,
    queues: Sequence[str] = (),
    expect_workers: int | None = None,
) -> Verdict:
    """The full verdict dict of one probe run in a child process."""
    env = dict(os.environ)
    # --no-on-down: a web process asking for health must never restart anything.
    args = ["run", "--format", "json", "--no-on-down", "--deadline", str(timeout)]
    if app is not None and not isinstance(app, str):
        broker = broker or app.conf.broker_url
        configured = app.conf.result_backend
        backend = backend or (configured if isinstance(configured, str) else None)
        queues = queues or [q.name for q in (app.conf.task_queues or [])] or [app.conf.task_default_queue]
    elif app:
        env["CELERY_PROBE_APP"] = app
    if broker:
        env["CELERY_PROBE_BROKER"] = broker
    if backend:
        env["CELERY_PROBE_BACKEND"] = backend
    for queue in queues:
        args += ["-Q", queue]
    if expect_workers:
        args += ["--expect-workers", str(expect_workers)]
    with tempfile.TemporaryDirectory(prefix="celery-probe-") as folder:
        args += ["--report-dir", folder]
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "celery_probe", *args], env=env, capture_output=True,
                text=True, timeout=timeout + PROCESS_SLACK, stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return unknown_verdict(f"the probe process did not finish within {timeout + PROCESS_SLACK:g}s")
    try:
        verdict = json.loads(proc.stdout)
    except ValueError:
        message = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return unknown_verdict(f"the probe process failed (exit {proc.returncode}): {message}")
    if not isinstance(verdict, dict):
        return unknown_verdict("the probe process printed no verdict")
    return cast(Verdict, verdict)  # what the child's mapper printed


def _with_datetime(seed: SeedShape) -> dict[str, Any]:
    shape: dict[str, Any] = dict(seed)
    beat = shape.get("last_heartbeat")
    if isinstance(beat, str):
        try:
            shape["last_heartbeat"] = datetime.fromisoformat(beat)
        except ValueError:
            shape["last_heartbeat"] = None
    return shape
