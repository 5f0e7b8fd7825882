"""``from celery_probe.beat import install_beat_tick``: the one import an operator's Celery app makes.

It sits in the app's own module, which workers and beat import at start-up, so its path is
kept stable whatever the probing room's layout: a moved import there would stop the
operator's workers, not just the monitor. The tick itself lives in
:mod:`celery_probe.probing.beat`.
"""

from __future__ import annotations

from celery_probe.probing.beat import DEFAULT_KEY, TICK_TASK, install_beat_tick

__all__ = ["DEFAULT_KEY", "TICK_TASK", "install_beat_tick"]
