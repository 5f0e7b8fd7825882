"""``install(app)``: the one line an operator adds to a Celery app for worker health files."""

from __future__ import annotations

from typing import Any

import click

from celery_probe.worker.evidence import DIR_ENV
from celery_probe.worker.steps import WorkerHealthStep, resolve_interval

_INSTALLED = "_celery_probe_worker_health"


def install(app: Any, probe_dir: str | None = None, *, interval: float | None = None) -> type:
    """Make ``app``'s workers keep ``liveness.json`` and ``readiness.json`` in a folder.

    The folder: the worker's ``--probe-dir DIR`` option (added here), else ``probe_dir``,
    else ``$CELERY_PROBE_WORKER_DIR``; with none, the worker logs one warning and writes
    nothing. ``interval``: seconds between writes (else ``$CELERY_PROBE_WORKER_INTERVAL``,
    else 5). Call it where the app is defined, before the worker starts; calling it again
    replaces the earlier defaults. Returns the bootstep class it registered.
    """
    resolve_interval(interval, {})  # a bad value fails here, at import of the app, not in the worker
    step = type("WorkerHealth", (WorkerHealthStep,), {
        "default_dir": str(probe_dir) if probe_dir is not None else None,
        "default_interval": interval, "__module__": __name__,
    })
    previous = getattr(app, _INSTALLED, None)
    if previous is not None:
        app.steps["consumer"].discard(previous)
    else:
        app.user_options["worker"].add(click.Option(
            ["--probe-dir"], default=None, metavar="DIR",
            help=f"celery-probe: keep liveness.json and readiness.json in DIR (else {DIR_ENV}).",
        ))
    app.steps["consumer"].add(step)
    setattr(app, _INSTALLED, step)
    return step
