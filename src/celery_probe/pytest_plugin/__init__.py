"""The pytest plugin: probes are pytest tests, and this is what makes a pytest session a probe run.

Owns the options, the fixtures operators' probes use (``probe_run``, ``celery_app``,
``probe_deadline``, ``record``, ``known``), the ordering of probes, the deadline around each
phase (and pytest-timeout's per-probe timeouts, kept by the same alarm: ``timeouts``), and
the metadata each probe leaves in the pytest-json-report report; and the probe
session (:mod:`~celery_probe.pytest_plugin.session_state`), the plugin object registered for
one run, which owns its targets and finishes its report. It may import
:mod:`celery_probe.config`, :mod:`celery_probe.probing`, :mod:`celery_probe.verdict` and
:mod:`celery_probe.storage`; the consumers never import it.
"""
