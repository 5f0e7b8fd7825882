"""Settings: what to probe and how, resolved once from flags, environment and ``pyproject.toml``.

Owns the typed :class:`~celery_probe.config.settings.Settings`, the declaration of every
setting, targets files of several deployments (:mod:`~celery_probe.config.targets`), URL
validation and credential masking (:mod:`~celery_probe.config.urls`) and the
duration syntax operators write (:mod:`~celery_probe.config.durations`). It may import the
standard library, :mod:`celery_probe.errors` and, lazily, Celery to read an app's own
configuration, and :mod:`celery_probe.verdict.flower` to validate ``--flower-url``; nothing
else from the other rooms, so every room can depend on it.
"""
