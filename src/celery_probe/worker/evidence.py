"""The two evidence files a worker keeps, as the worker writes them and ``worker-check`` reads them.

One module names the files and their fields for both sides, so the writer (inside the worker,
with Celery loaded) and the judge (a fresh process without Celery) cannot drift apart. Pure:
plain dicts in, plain dicts out, the clock passed in.

``liveness.json``::

    {"kind": "liveness", "version": 1, "worker": "celery@web-1", "pid": 7, "pool": "prefork",
     "interval": 5.0, "updated": 1764758400.0, "state": "running", "since": 1764758000.0,
     "busy": null}

``state`` is ``running`` (the event loop wrote this), ``connecting`` (the worker is in Celery's
broker connection retry, where no event loop runs) or ``stopping`` (warm shutdown). ``busy``
is set only by the solo pool, whose one loop runs each task itself:
``{"task": "proj.report", "id": "…", "since": 1764758390.0}``.

``readiness.json``::

    {"kind": "readiness", "version": 1, "worker": "celery@web-1", "pid": 7, "interval": 5.0,
     "updated": 1764758400.0, "ready": false, "reason": "consumer for queue 'emails' cancelled",
     "not_ready_since": 1764758358.0, "queues": {"expected": ["celery", "emails"],
     "consumed": ["celery"]}, "connected_at": 1764758000.0, "broker_ok_at": 1764758399.2,
     "broker_check": "redis PING", "busy": null}
"""

from __future__ import annotations

TYPE_CHECKING = False  # read by worker-check, which imports no typing at run time
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

LIVENESS = "liveness"
READINESS = "readiness"
FILES = {LIVENESS: "liveness.json", READINESS: "readiness.json"}
VERSION = 1

RUNNING = "running"
CONNECTING = "connecting"
STOPPING = "stopping"
STATES = (RUNNING, CONNECTING, STOPPING)

# Where the folder and the writing interval come from (install() arguments win over these only
# when given; --probe-dir wins over everything for the folder).
DIR_ENV = "CELERY_PROBE_WORKER_DIR"
INTERVAL_ENV = "CELERY_PROBE_WORKER_INTERVAL"
DEFAULT_INTERVAL = 5.0
# worker-check's default --max-age is this many intervals of the worker that wrote the file.
MAX_AGE_INTERVALS = 6


def busy_record(task: str, task_id: str, since: float) -> dict[str, Any]:
    return {"task": task, "id": task_id, "since": since}


def liveness_record(*, worker: str, pid: int, pool: str, interval: float, now: float, state: str,
                    since: float, busy: dict[str, Any] | None, pid_start: int | None = None) -> dict[str, Any]:
    """What the worker says about its own main loop at ``now``.

    ``pid_start`` is when the process started, in clock ticks since boot (``/proc/PID/stat``):
    with the pid, it names the process, so a file left by a worker that died is not taken for
    a new worker's when a restarted container gives the new one the same pid.
    """
    return {"kind": LIVENESS, "version": VERSION, "worker": worker, "pid": pid, "pid_start": pid_start, "pool": pool,
            "interval": interval, "updated": now, "state": state, "since": since, "busy": busy}


def readiness_record(*, worker: str, pid: int, interval: float, now: float, ready: bool,
                     reason: str | None, not_ready_since: float | None, expected: Sequence[str],
                     consumed: Sequence[str], connected_at: float | None, broker_ok_at: float | None,
                     broker_check: str | None, busy: dict[str, Any] | None,
                     pid_start: int | None = None) -> dict[str, Any]:
    """What the worker says about its broker connection and its consumers at ``now``."""
    return {"kind": READINESS, "version": VERSION, "worker": worker, "pid": pid, "pid_start": pid_start,
            "interval": interval,
            "updated": now, "ready": ready, "reason": None if ready else reason,
            "not_ready_since": None if ready else not_ready_since,
            "queues": {"expected": list(expected), "consumed": list(consumed)},
            "connected_at": connected_at, "broker_ok_at": broker_ok_at, "broker_check": broker_check,
            "busy": busy}


def readiness_problem(*, connected: bool, lost_reason: str | None, expected: Sequence[str],
                      consumed: Sequence[str], cancelled: Sequence[str], broker_ok_at: float | None,
                      broker_error: str | None, broker_grace: float | None, now: float) -> str | None:
    """Why the worker is not ready, or None when it is: connected, consuming every expected
    queue, and the broker answered a round trip within ``broker_grace`` seconds (None: the
    transport has no round trip to time, so that part is not judged)."""
    if not connected:
        return lost_reason or "not connected to the broker"
    missing = [name for name in expected if name not in consumed]
    if missing:
        gone = [name for name in missing if name in cancelled]
        if gone:
            return f"consumer for queue {_names(gone)} cancelled"
        return f"not consuming queue {_names(missing)}"
    if broker_grace is not None and (broker_ok_at is None or now - broker_ok_at > broker_grace):
        since = "yet" if broker_ok_at is None else f"for {now - broker_ok_at:.0f}s"
        detail = f" ({broker_error})" if broker_error else ""
        return f"the broker has not answered a round trip {since}{detail}"
    return None


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)

