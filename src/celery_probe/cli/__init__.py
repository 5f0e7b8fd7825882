"""The ``celery-probe`` command: each command parses its options, calls one room, prints.

Owns the click commands (``run``, ``verdict``, ``check``, ``ingest``, ``serve``, ``report``,
``demo``) and the demo's Celery app. It may import every other room; nothing imports it.
This ``__init__`` imports nothing, so a worker can load :mod:`celery_probe.cli.demo_app`
without click.
"""
