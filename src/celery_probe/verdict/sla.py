"""SLA arithmetic, apart from any I/O: round trips against per-queue SLAs, and task
runtimes against per-task-type SLAs.

A task type breaches its SLA when its p95 runtime exceeds it: one slow outlier among many
fast runs is not a breach, a slow tail is. With fewer than twenty runs p95 is the maximum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

MAX_TASK_TYPES = 200  # task types reported per run; the rest are counted, not listed


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of non-empty ``values``."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rule_for(name: str, rules: Iterable[tuple[str, float]]) -> tuple[str, float] | None:
    """The first ``(pattern, seconds)`` rule whose fnmatch pattern matches ``name``."""
    return next(((pattern, seconds) for pattern, seconds in rules if fnmatchcase(name, pattern)), None)


def queue_slas(roundtrips: Mapping[str, float | None], rules: Iterable[tuple[str, float]]) -> dict[str, dict[str, Any]]:
    """Each queue with an SLA: ``sla_ms``, the measured ``roundtrip_ms`` and ``breach``.

    ``roundtrips`` maps a queue to its confirmed round trip in ms, or None when it failed
    or was not sent this run; such a queue has ``breach`` None (not measured), because
    the failed round trip is reported on its own.
    """
    out: dict[str, dict[str, Any]] = {}
    for queue, seconds in rules:
        if queue not in roundtrips:
            continue
        latency = roundtrips[queue]
        sla_ms = round(seconds * 1000, 3)
        out[queue] = {"sla_ms": sla_ms, "roundtrip_ms": latency,
                      "breach": None if latency is None else latency > sla_ms}
    return out


def runtime_stats(
    runtimes: Mapping[str, Sequence[float]],
    failed: Mapping[str, int],
    rules: Iterable[tuple[str, float]],
) -> dict[str, dict[str, Any]]:
    """Per task type: ``count``, ``failed``, ``p50_ms``, ``p95_ms``, ``max_ms``, ``sla_ms``, ``breach``.

    Types are ordered by name; at most :data:`MAX_TASK_TYPES` of them (breaches first).
    """
    rules = list(rules)
    stats: dict[str, dict[str, Any]] = {}
    for name in sorted(set(runtimes) | set(failed)):
        values = list(runtimes.get(name, ()))
        rule = rule_for(name, rules)
        entry: dict[str, Any] = {"count": len(values), "failed": int(failed.get(name, 0)),
                                 "p50_ms": None, "p95_ms": None, "max_ms": None,
                                 "sla_ms": round(rule[1] * 1000, 3) if rule else None,
                                 "sla_pattern": rule[0] if rule else None, "breach": False}
        if values:
            entry.update(p50_ms=_ms(percentile(values, 50)), p95_ms=_ms(percentile(values, 95)),
                         max_ms=_ms(max(values)))
            entry["breach"] = entry["sla_ms"] is not None and entry["p95_ms"] > entry["sla_ms"]
        stats[name] = entry
    if len(stats) > MAX_TASK_TYPES:
        keep = sorted(stats, key=lambda n: (not stats[n]["breach"], n))[:MAX_TASK_TYPES]
        stats = {name: stats[name] for name in sorted(keep)}
    return stats


def describe_breach(name: str, entry: Mapping[str, Any]) -> str:
    """``app.sync.chats p95 2410 ms, max 3020 ms > SLA 2000 ms (12 runs)``."""
    return (f"{name} p95 {entry['p95_ms']:.0f} ms, max {entry['max_ms']:.0f} ms > SLA "
            f"{entry['sla_ms']:.0f} ms ({entry['count']} runs)")


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
