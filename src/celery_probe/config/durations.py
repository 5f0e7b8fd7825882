"""Durations as operators write them: ``90s``, ``5m``, ``1.5h``, ``250ms``, ``2d``.

One parser for every setting that takes a length of time, so ``--on-down-after 5m`` and
any later option read the same spelling the same way. A bare number means seconds, which
keeps the older numeric settings' spelling (``--deadline 5``) valid wherever a duration is
accepted. Pure functions: no clock, no I/O.
"""

from __future__ import annotations

import math
import re
TYPE_CHECKING = False  # typing is not imported at run time (worker-check starts in milliseconds)
if TYPE_CHECKING:
    from typing import Any

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>ms|s|m|h|d)?", re.IGNORECASE)
EXPECTED = "must be a duration like 90s, 5m, 1.5h or 250ms"


def parse_duration(raw: Any) -> float:
    """Seconds in ``raw`` (a string with an optional unit, or a number of seconds).

    Raises ValueError whose message says what is wrong, for the caller to put in its own
    one-line error with the value's source.
    """
    if isinstance(raw, bool):
        raise ValueError(EXPECTED)
    if isinstance(raw, (int, float)):
        seconds = float(raw)
    elif isinstance(raw, str):
        match = _DURATION.fullmatch(raw.strip())
        if match is None:
            raise ValueError(EXPECTED)
        seconds = float(match["number"]) * UNITS[(match["unit"] or "s").lower()]
    else:
        raise ValueError(EXPECTED)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{EXPECTED}, not negative")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form: ``250ms``, ``45s``, ``2m``, ``1h 5m``; rounded to what matters."""
    if seconds < 0:
        seconds = 0.0
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 or float(seconds).is_integer() else f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m" + (f" {secs}s" if secs and minutes < 10 else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h" + (f" {minutes}m" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days}d" + (f" {hours}h" if hours else "")


MIN_INTERVAL, MAX_INTERVAL = 0.5, 86_400.0
"""Bounds of ``serve``'s interval between two runs' starts (``--interval``, a target's ``interval``)."""


def parse_interval(raw: Any, source: str) -> float:
    """``serve``'s interval in seconds (a number or a duration), or a one-line error naming ``source``."""
    from celery_probe.errors import ProbeUsageError

    try:
        value = parse_duration(raw.strip() if isinstance(raw, str) else raw)
    except ValueError as exc:
        raise ProbeUsageError(f"invalid interval {raw!r}: {exc} (from {source})") from None
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:
        raise ProbeUsageError(
            f"invalid interval {raw!r}: must be between {MIN_INTERVAL:g} and {MAX_INTERVAL:g} seconds (from {source})"
        )
    return value
