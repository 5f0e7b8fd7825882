"""bench_app with worker health files: what bench_worker_check.py's worker runs."""

from __future__ import annotations

import celery_probe.worker
from bench_app import app

celery_probe.worker.install(app)

__all__ = ["app"]
