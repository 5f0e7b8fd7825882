"""Outgoing network calls, each bounded as a whole: HTTP on requests, and a deadline for any call.

:mod:`~celery_probe.net.http` sends every outgoing HTTP request (the endpoint probe, ``check``,
webhooks, ``ingest --post``) under one wall-clock bound, with the operator's proxy, CA,
client-certificate and auth-header settings. :mod:`~celery_probe.net.bounded` bounds any
blocking call (mail delivery uses it for ``smtplib``) and words network errors in one line.
This room may import :mod:`celery_probe.errors` and :mod:`celery_probe.config`; requests itself
is imported only when a request is sent, so a run without HTTP never pays for it.
"""
