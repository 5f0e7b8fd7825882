"""``celery-probe serve``: the verdict over HTTP, from a background loop of child-process runs.

Owns the ASGI app (:mod:`~celery_probe.serve.app`: health JSON, status codes, metrics,
ops-alerts, OpenAPI), the probe loop (:mod:`~celery_probe.serve.loop`) and the status page
it renders once per change (:mod:`~celery_probe.serve.status_view`). It may import
config, run, verdict, storage and present; the command line that starts it is in
:mod:`celery_probe.cli.serve`.
"""
