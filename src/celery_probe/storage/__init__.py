"""Storage: files on disk that other processes read while they are written.

Owns atomic report writing and tolerant reading (:mod:`~celery_probe.storage.reports`), the
file lock beside a guarded file (:mod:`~celery_probe.storage.filelock`) and the run history
with its rotated files (:mod:`~celery_probe.storage.history`). It may import
:mod:`celery_probe.verdict`, :mod:`celery_probe.config` and :mod:`celery_probe.errors`.
"""
