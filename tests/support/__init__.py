"""Helpers of celery-probe's own tests and benchmarks (not shipped).

The documented helpers operators use for their own probes stay in ``celery_probe.testing``.
"""
