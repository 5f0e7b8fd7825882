"""One deadline for the whole run, enforced outside every Celery call.

Celery and kombu can block forever on a broker that accepts TCP and never answers
(``control.ping`` on a frozen Redis). Socket timeouts shorten most waits, but only a
timer outside the call bounds all of them: :func:`alarm` arms ``SIGALRM`` for whatever is
left of the run's budget and raises :class:`ProbeTimeout` into the blocked call.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class ProbeTimeout(BaseException):
    """The run's deadline ran out while a probe was waiting.

    A BaseException, so that ``except Exception`` retry loops inside kombu cannot swallow
    it and keep blocking.
    """


class Deadline:
    """The time budget of a run, shared by every probe."""

    def __init__(self, total: float) -> None:
        self.total = total
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return max(0.0, self.total - self.elapsed())

    def expired(self) -> bool:
        return self.remaining() <= 0.0

    def within(self, seconds: float) -> float:
        """``seconds``, or less when the run has less left."""
        return max(0.0, min(seconds, self.remaining()))


def _can_use_signals() -> bool:
    return threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")


@contextmanager
def alarm(seconds: float, what: str) -> Iterator[None]:
    """Raise :class:`ProbeTimeout` in this thread if the block outlives ``seconds``.

    Alarms nest: an inner one never outlasts the outer, and leaving it re-arms the outer
    with whatever the outer has left. Off the main thread (where signals cannot be
    delivered) it does nothing; socket timeouts and the run's watchdog remain.
    """
    if not _can_use_signals():
        yield
        return
    outer_left, _interval = signal.getitimer(signal.ITIMER_REAL)
    seconds = max(seconds, 0.001)
    if outer_left > 0:
        seconds = min(seconds, outer_left)
    started = time.monotonic()

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise ProbeTimeout(f"deadline reached after {seconds:.2f}s during {what}")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left > 0:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, outer_left - (time.monotonic() - started)))
