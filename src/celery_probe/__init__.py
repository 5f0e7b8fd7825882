"""celery-probe: health checks for Celery deployments, written as pytest probes."""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not imported at run time: worker-check starts in milliseconds
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "get_celery_health"]


def get_celery_health(timeout: float = 5, **target: Any) -> dict[str, Any]:
    """Probe Celery and return the classic health dict (see :mod:`celery_probe.run.child`)."""
    from celery_probe.run.child import get_celery_health as _get

    return _get(timeout=timeout, **target)
