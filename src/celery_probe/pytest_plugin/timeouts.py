"""Per-probe timeouts: pytest-timeout's marker, ini value and ``--timeout``, on the run's alarm.

pytest-timeout decides how long a probe may take (its marker, then ``--timeout``, then
``PYTEST_TIMEOUT``, then the ``timeout`` ini value) and asks, through its
``pytest_timeout_set_timer`` hook, how to enforce it. In a probe run the plugin answers: it
records the timer here (:func:`start_timer`), and every phase of the probe is bounded by the
run's one nested alarm (:func:`celery_probe.probing.deadline.alarm`) with whatever is less,
the rest of the probe's timeout or the rest of the run's deadline. So a per-probe timeout
never outlasts the deadline, a second ``SIGALRM`` handler never competes with the first, and
pytest-timeout's own signal or thread method (which dumps stacks, or ends the process) is
never used.

A probe cut by its own timeout fails as ``celery_probe_timeout`` at its declared severity,
with a message that names the timeout and where it came from; one that could not get a fair
share of it for want of a CPU is ``celery_probe_starved`` instead, like any other wait.

pytest-timeout reads an invalid marker inside ``pytest_runtest_protocol``, where the error
would end the whole session; :func:`timeout_marker_problem` finds it at collection, so the
probe fails alone (``celery_probe_error``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from celery_probe.config.settings import Settings
from celery_probe.probing.deadline import Deadline, Starved, Wait, run_queue_delay

MARKER_KEYWORDS = ("timeout", "method", "func_only")  # what pytest-timeout's marker accepts
METHODS = ("signal", "thread")


@dataclass
class ProbeTimer:
    """The timeout pytest-timeout set for one probe, and when it started."""

    seconds: float
    source: str  # where the value came from: "its timeout marker", "--timeout", ...
    wait: Wait  # the probe's time since the timer was set, and its CPU wait

    def left(self) -> float:
        return max(0.0, self.seconds - self.wait.wall)

    def message(self) -> str:
        return f"probe exceeded its {self.seconds:g} s timeout (from {self.source})"

    def needed(self) -> float:
        """The time the probe must have had before running out counts against it."""
        return min(self.seconds, self.wait.deadline.fair_wait())

    def fair(self) -> bool:
        return self.wait.fair(self.needed())

    def starved(self) -> Starved:
        return self.wait.starved(self.needed())


_TIMER = pytest.StashKey[ProbeTimer]()
_TIMED_OUT = pytest.StashKey[str]()


def start_timer(item: pytest.Item, seconds: float, settings: Settings, deadline: Deadline) -> None:
    """Record the probe's timeout; the phases that follow are bounded by it (see :func:`timer`)."""
    what = f"the {seconds:g} s timeout of {item.name}"
    wait = Wait(deadline, what, time.monotonic(), run_queue_delay())
    item.stash[_TIMER] = ProbeTimer(seconds, timeout_source(item, settings), wait)


def cancel_timer(item: pytest.Item) -> None:
    if _TIMER in item.stash:
        del item.stash[_TIMER]


def timer(item: pytest.Item) -> ProbeTimer | None:
    """The probe's running timer, None without a per-probe timeout."""
    return item.stash.get(_TIMER, None)


def timeout_source(item: pytest.Item, settings: Settings) -> str:
    """Where pytest-timeout took the probe's timeout from, in its own order of precedence."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and _marker_timeout(marker.args, marker.kwargs) is not None:
        return "its timeout marker"
    option = item.config.getoption("timeout", None)
    if option is not None:
        # celery-probe's own timeout setting reaches pytest as --timeout: name its real source.
        same = settings.timeout == option
        return settings.sources.get("timeout", "--timeout") if same else "--timeout"
    if os.environ.get("PYTEST_TIMEOUT"):
        return "environment variable PYTEST_TIMEOUT"
    return "the timeout ini value"


def mark_timed_out(item: pytest.Item, timer: ProbeTimer) -> None:
    """Record that ``item`` was cut by its own timeout (reason code ``celery_probe_timeout``)."""
    item.stash[_TIMED_OUT] = timer.message()


def timeout_metadata(item: pytest.Item) -> dict[str, str]:
    """``{"timed_out": message}`` for the report of a probe cut by its own timeout."""
    return {"timed_out": item.stash[_TIMED_OUT]} if _TIMED_OUT in item.stash else {}


def timeout_marker_problem(item: pytest.Item) -> str | None:
    """What is wrong with the probe's ``timeout`` marker, None when it is valid or absent."""
    marker = item.get_closest_marker("timeout")
    if marker is None:
        return None
    try:
        _check_marker(marker.args, marker.kwargs)
    except ValueError as exc:
        return str(exc)  # the reason names the probe
    return None


def _check_marker(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Raise ValueError for every marker pytest-timeout would refuse, and for timeouts below 0."""
    if not args and not kwargs:
        raise ValueError("timeout marker needs a number of seconds")
    unknown = sorted(set(kwargs) - set(MARKER_KEYWORDS))
    if unknown:
        raise ValueError(f"timeout marker takes {', '.join(MARKER_KEYWORDS)}, not {unknown[0]!r}")
    if len(args) > 2 or (args and "timeout" in kwargs) or (len(args) > 1 and "method" in kwargs):
        raise ValueError("timeout marker takes at most (timeout, method), each once")
    _marker_timeout(args, kwargs)
    method = kwargs.get("method", args[1] if len(args) > 1 else None)
    if method is not None and method not in METHODS:
        raise ValueError(f"timeout method must be one of {METHODS}, not {method!r}")
    func_only = kwargs.get("func_only")
    if func_only is not None and not isinstance(func_only, bool):
        raise ValueError(f"timeout func_only must be True or False, not {func_only!r}")


def _marker_timeout(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> float | None:
    """The marker's timeout in seconds (None: not given); ValueError unless a number >= 0."""
    raw = kwargs.get("timeout", args[0] if args else None)
    if raw is None:
        return None
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"timeout must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"timeout must be 0 (none) or more seconds, not {raw!r}")
    return value
