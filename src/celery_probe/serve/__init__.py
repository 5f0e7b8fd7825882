"""``celery-probe serve``: the verdict over HTTP, from a background loop of child-process runs.

Owns the ASGI app (:mod:`~celery_probe.serve.app`: health JSON, status codes, metrics,
ops-alerts, OpenAPI), the probe loop (:mod:`~celery_probe.serve.loop`) and the status page
it renders once per change (:mod:`~celery_probe.serve.status_view`), the optional credentials
(:mod:`~celery_probe.serve.auth`, read by :mod:`~celery_probe.serve.credentials`) and the
deadline on request heads uvicorn lacks (:mod:`~celery_probe.serve.header_deadline`). It may import
config, run, verdict, storage and present; the command line that starts it is in
:mod:`celery_probe.cli.serve`.

``from celery_probe.serve import ProbeMiddleware`` (and ``make_app``) is the documented
import of an operator's web app, so it keeps working; it is resolved on first use, so the
loop and the status view do not pay for Starlette.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ProbeMiddleware", "make_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from celery_probe.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'celery_probe.serve' has no attribute {name!r}")
