"""Probing: the measurements a run takes of the broker, the backend, the workers and the endpoints.

Owns the app under test (:mod:`~celery_probe.probing.app`), the run's deadline and its fair
judgement (:mod:`~celery_probe.probing.deadline`), and one module per thing measured: broker
and queue depth, worker ping and activity, the task round trip, backlog samples, beat, events,
HTTP endpoints. :mod:`~celery_probe.probing.measurements` takes each measurement once and shares
it with every probe. This is the room that talks to Celery, kombu and redis; it may import
:mod:`celery_probe.config`, :mod:`celery_probe.verdict` (reason codes),
:mod:`celery_probe.storage` (the round trip's cursor file), :mod:`celery_probe.errors` and
:mod:`celery_probe.net` (the endpoints' HTTP), never pytest or the consumers.
"""
