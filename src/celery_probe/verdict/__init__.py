"""The verdict: pure judgement of a run's evidence, with no I/O and no clock of its own.

Owns the mapper from a pytest-json-report report to a verdict
(:mod:`~celery_probe.verdict.mapper`), the verdict's typed shape and the JSON Schema made from
it (:mod:`~celery_probe.verdict.model`), what a probe marker means,
and the pure judgements probes share: SLAs (:mod:`~celery_probe.verdict.sla`), worker drift
(:mod:`~celery_probe.verdict.drift`) and the Flower links of a reason
(:mod:`~celery_probe.verdict.flower`). It imports only the standard library,
:mod:`celery_probe.errors` and :mod:`celery_probe.config.urls` (and typing_extensions on Python
3.10, for the model's NotRequired); every consumer imports it.
"""
