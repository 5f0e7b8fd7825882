"""bench_app with worker health files: what bench_worker_check.py's worker runs."""

from __future__ import annotations

from bench_app import app

import celery_probe.worker

celery_probe.worker.install(app)

__all__ = ["app"]
