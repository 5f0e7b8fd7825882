"""Auto-remediation: ``celery-probe run --on-down CMD`` runs an operator's command once down has lasted.

* :mod:`~celery_probe.remediation.policy`: when to act (pure);
* :mod:`~celery_probe.remediation.command`: running the command, bounded, without a shell;
* :mod:`~celery_probe.remediation.apply`: the state file, the history line, the output line.

Its ``--on-down*`` flags are settings, declared in :mod:`celery_probe.config.settings`
(and offered by :mod:`celery_probe.cli.options` with the one-run switch ``--no-on-down``).

Only ``celery-probe run`` acts: ``serve`` and ``get_celery_health()`` run their probes with
``--no-on-down``, so a restart command in ``pyproject.toml`` never fires from a web process.
"""
