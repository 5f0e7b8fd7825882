"""Workers that tell their own health: evidence files for liveness and readiness probes.

In the Celery app::

    import celery_probe.worker

    celery_probe.worker.install(app)          # folder from --probe-dir or CELERY_PROBE_WORKER_DIR

and in the pod, ``celery-probe worker-check DIR --liveness`` / ``--readiness``
(:mod:`~celery_probe.worker.check_cli`), which reads the files without Celery or the broker.
The writing side (:mod:`~celery_probe.worker.steps`) imports Celery; the reading side
(:mod:`~celery_probe.worker.judge`, :mod:`~celery_probe.worker.evidence`) is the standard
library only, so this ``__init__`` imports nothing until :func:`install` is called.
"""

from __future__ import annotations

TYPE_CHECKING = False  # worker-check imports this package: no typing at run time
if TYPE_CHECKING:
    from typing import Any


def install(app: Any, probe_dir: str | None = None, *, interval: float | None = None) -> type:
    """See :func:`celery_probe.worker.register.install` (imported here lazily: it needs Celery)."""
    from celery_probe.worker.register import install as _install

    return _install(app, probe_dir, interval=interval)


__all__ = ["install"]
