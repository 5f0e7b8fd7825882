"""The one test of a number read from data nobody vouches for.

Reports, verdicts fetched from another host and history lines are JSON: a field meant to be
a number can hold a string, ``true`` (which Python counts as the int 1), or ``NaN`` and
``Infinity`` (which Python's json accepts). Each is "no number", never a crash and never a
figure that breaks a chart, a metric or a strict JSON reader. Pure, standard library only.
"""

from __future__ import annotations

import math
TYPE_CHECKING = False  # typing is not imported at run time (worker-check starts in milliseconds)
if TYPE_CHECKING:
    from typing import Any


def number(value: Any) -> int | float | None:
    """``value`` when it is a finite int or float (a bool is not a number), else None.

    The type is kept: a count stays an int wherever it is shown (``Active tasks: 3``).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value
