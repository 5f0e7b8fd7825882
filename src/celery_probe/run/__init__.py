"""One probe run from the outside: start the probe session, bound it, and hand its report on.

Owns running the probe suite in-process under a watchdog (:mod:`~celery_probe.run.in_process`),
running it in a child process for callers that must not share its state
(:mod:`~celery_probe.run.child`, behind ``get_celery_health()`` and ``serve``), the life of one
``celery-probe run`` from the watchdog to ``--on-down`` (:mod:`~celery_probe.run.life`), and the
run's extra outputs (:mod:`~celery_probe.run.outputs`). It may import every room below the
consumers: config, probing, pytest_plugin, verdict, storage and present, and alerting and
remediation, which a run ends with.
"""
