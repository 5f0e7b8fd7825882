"""One deadline for the whole run, enforced outside every Celery call, and judged fairly.

Celery and kombu can block forever on a broker that accepts TCP and never answers
(``control.ping`` on a frozen Redis). Socket timeouts shorten most waits, but only a
timer outside the call bounds all of them: :func:`alarm` arms ``SIGALRM`` for whatever is
left of the run's budget and raises :class:`ProbeTimeout` into the blocked call.

A wait that ran out is evidence against the broker or a worker only if the prober gave it a
fair chance. On a busy host (the workers' own, where cron often runs the probe) the
prober's start-up can take most of the deadline, and the wait that follows gets a sliver.
So every wait is timed with :meth:`Deadline.wait`: its wall time minus the time this process
spent runnable but waiting for a CPU (the kernel's run-queue delay, ``/proc/self/schedstat``)
is what the service really had to answer. Below :meth:`Deadline.fair_wait` it proves nothing,
and the probe reports :class:`Starved` (an ``unknown`` verdict) instead of a failure.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

FAIR_WAIT_SHARE = 0.2  # of the deadline: what a wait needs before its silence is evidence...
FAIR_WAIT_MAX = 1.0  # ...but never more than this (a healthy broker answers in milliseconds)
SCHEDSTAT = "/proc/self/schedstat"


_schedstat: tuple[int, int] | None = None  # (pid, descriptor) of this process's own SCHEDSTAT


def run_queue_delay() -> float | None:
    """Seconds this process has spent runnable but not running (None where unknown).

    Read at the start and end of every wait, about a hundred times a run, so the file stays
    open and is read again from its start. ``/proc/self`` means the process that opened it:
    a forked process opens its own.
    """
    global _schedstat
    try:
        pid = os.getpid()
        if _schedstat is None or _schedstat[0] != pid:
            if _schedstat is not None:
                os.close(_schedstat[1])  # the parent's, inherited through fork
            _schedstat = None  # if the open below fails, no closed descriptor is left to read
            _schedstat = (pid, os.open(SCHEDSTAT, os.O_RDONLY | os.O_CLOEXEC))
        return int(os.pread(_schedstat[1], 256, 0).split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def host_load() -> str:
    """``load average 6.12 on 2 CPUs``, or an empty string where it cannot be read."""
    try:
        one_minute = os.getloadavg()[0]
    except OSError:
        return ""
    return f"load average {one_minute:.2f} on {os.cpu_count() or 1} CPUs"


class Starved(Exception):
    """The prober itself could not get the time a measurement needed: no evidence either way.

    Raised instead of a failure when a wait ran out after less than its fair share of the
    deadline; probes turn it into an ``unknown`` verdict (code ``celery_probe_starved``).
    """


@dataclass
class Wait:
    """One timed wait: its wall time and the part of it this process spent waiting for a CPU."""

    deadline: Deadline
    what: str
    started: float = 0.0
    delay_at_start: float | None = None
    ended: float | None = None
    delay_at_end: float | None = None

    def stop(self) -> None:
        if self.ended is None:
            self.ended = time.monotonic()
            self.delay_at_end = run_queue_delay()

    @property
    def wall(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.started

    @property
    def effective(self) -> float:
        """The wall time less the run-queue delay: how long the service really had to answer."""
        end = self.delay_at_end if self.ended is not None else run_queue_delay()
        if self.delay_at_start is None or end is None:
            return self.wall
        return max(0.0, self.wall - max(0.0, end - self.delay_at_start))

    def fair(self, needed: float | None = None) -> bool:
        """Whether the service had at least ``needed`` (default: the fair wait) to answer."""
        return self.effective >= (self.deadline.fair_wait() if needed is None else needed) * 0.95

    def starved(self, needed: float | None = None) -> Starved:
        """The :class:`Starved` that says why this wait proves nothing."""
        fair = self.deadline.fair_wait() if needed is None else needed
        return Starved(self.deadline.starvation(f"{self.what} had {self.effective:.2f}s of the {fair:.2f}s it needs"))


class ProbeTimeout(BaseException):
    """The run's deadline ran out while a probe was waiting.

    A BaseException, so that ``except Exception`` retry loops inside kombu cannot swallow
    it and keep blocking. ``cut_short``: the alarm fired before its own time because an outer
    one (a probe's own timeout) ended first, so it proves nothing about what was waited for.
    """

    def __init__(self, message: str, *, cut_short: bool = False) -> None:
        super().__init__(message)
        self.cut_short = cut_short


class Deadline:
    """The time budget of a run, shared by every probe."""

    def __init__(self, total: float, *, since: Deadline | None = None) -> None:
        """A budget of ``total`` seconds, counted from now or from when ``since`` started."""
        self.total = total
        self.started = since.started if since is not None else time.monotonic()
        self.delay_at_start = since.delay_at_start if since is not None else run_queue_delay()

    def restart(self) -> None:
        """Count the budget from now (a run forked from a warm session starts here)."""
        self.started = time.monotonic()
        self.delay_at_start = run_queue_delay()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return max(0.0, self.total - self.elapsed())

    def within(self, seconds: float) -> float:
        """``seconds``, or less when the run has less left."""
        return max(0.0, min(seconds, self.remaining()))

    def fair_wait(self) -> float:
        """How long a wait must have had before a silence counts as evidence."""
        return min(FAIR_WAIT_MAX, FAIR_WAIT_SHARE * self.total)

    def cpu_wait(self) -> float:
        """Seconds of this run this process spent waiting for a CPU (0 where unknown)."""
        now = run_queue_delay()
        if now is None or self.delay_at_start is None:
            return 0.0
        return max(0.0, now - self.delay_at_start)

    def starved_run(self) -> bool:
        """Whether waiting for a CPU took a large part of the deadline (a quarter or more)."""
        return self.cpu_wait() >= 0.25 * self.total

    def starvation(self, what: str) -> str:
        """One line saying that ``what`` was cut short by the prober's own lack of time."""
        load = host_load()
        return (
            f"the prober could not get the time it needed: {what}; {self.elapsed():.2f}s of the "
            f"{self.total:g}s deadline had passed, {self.cpu_wait():.2f}s of it waiting for a CPU"
            + (f" ({load})" if load else "")
            + ". No evidence against Celery"
        )

    @contextmanager
    def wait(self, what: str) -> Iterator[Wait]:
        """Time a wait for ``what``; judge it afterwards with :meth:`Wait.fair`."""
        timed = Wait(self, what, time.monotonic(), run_queue_delay())
        try:
            yield timed
        finally:
            timed.stop()


def _can_use_signals() -> bool:
    return threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")


CUT_SHORT_MARGIN = 0.05  # seconds: an alarm cut by less than this still had its own time
_probe_timeouts: list[bool] = []  # per armed alarm, innermost last: is it a probe's own timeout?


@contextmanager
def alarm(seconds: float, what: str, *, probe_timeout: bool = False) -> Iterator[None]:
    """Raise :class:`ProbeTimeout` in this thread if the block outlives ``seconds``.

    Alarms nest: an inner one never outlasts the outer, and leaving it re-arms the outer
    with whatever the outer has left. Off the main thread (where signals cannot be
    delivered) it does nothing; socket timeouts and the run's watchdog remain.
    """
    if not _can_use_signals():
        yield
        return
    outer_left, _interval = signal.getitimer(signal.ITIMER_REAL)
    requested = max(seconds, 0.001)
    seconds = min(requested, outer_left) if outer_left > 0 else requested
    # Cut short: a probe's own timeout (an outer alarm with ``probe_timeout``) leaves this one
    # clearly less than it asked for, so its firing says nothing about what it waited for.
    cut_short = any(_probe_timeouts) and requested - seconds > CUT_SHORT_MARGIN
    started = time.monotonic()

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise ProbeTimeout(f"deadline reached after {seconds:.2f}s during {what}", cut_short=cut_short)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    _probe_timeouts.append(probe_timeout)
    try:
        yield
    finally:
        _probe_timeouts.pop()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer_left > 0:
            signal.setitimer(signal.ITIMER_REAL, max(0.001, outer_left - (time.monotonic() - started)))
