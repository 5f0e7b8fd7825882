"""Presenting a verdict: pure renderers from a verdict (and its report) to what a reader wants.

Owns the terminal text, JSON and Nagios line (:mod:`~celery_probe.present.text`), Prometheus
metrics (:mod:`~celery_probe.present.metrics`), JUnit XML, the ops-alerts document and the
status page with its charts. Each is a function of its inputs; writing the result is the
caller's job. It may import :mod:`celery_probe.verdict`, :mod:`celery_probe.config` and,
for the status page's history, :mod:`celery_probe.storage`.
"""
