"""Presenting a verdict: pure renderers from a verdict (and its report) to what a reader wants.

Owns the terminal text, JSON and Nagios line (:mod:`~celery_probe.present.text`) and printing
them with their exit code (:mod:`~celery_probe.present.emit`), Prometheus
metrics (:mod:`~celery_probe.present.metrics`), JUnit XML, the ops-alerts document and the
status page with its charts. Each renders from its inputs alone; the JUnit XML and the
``--prom-file`` textfile are also written here, atomically, through :mod:`celery_probe.storage`.
It may import :mod:`celery_probe.verdict`, :mod:`celery_probe.config` and,
for the status page's history, :mod:`celery_probe.storage`.
"""
