"""Judging a worker's evidence files: pure, so every case is a unit test without a worker or a clock.

``worker-check`` reads one file, then asks :func:`judge` whether it still holds at ``now``.
The answer is one line for the kubelet's event log and an exit code:

- **liveness** holds while the worker's main loop wrote the file within ``max_age`` seconds;
  also while the worker is in Celery's broker connection retry (``state: connecting``: the
  broker is away, restarting the worker would not bring it back) or in its warm shutdown
  (``state: stopping``: killing it would lose the tasks it waits for), and while a solo worker
  runs one task, up to ``max_busy`` seconds from the task's start (the solo pool runs the
  task inside its only loop, so the loop cannot write meanwhile).
- **readiness** holds while the file is fresh (or the solo worker is busy, as above) and says
  ``ready``.

``max_age`` defaults to :data:`~celery_probe.worker.evidence.MAX_AGE_INTERVALS` intervals of the
worker that wrote the file; ``max_busy`` defaults to ``max_age``. Stale evidence is excused
(connecting, busy) only while the process that wrote it still exists, when the caller can
tell (``pid_alive``; the check runs in the worker's container, so it sees the worker's pids).
"""

from __future__ import annotations

TYPE_CHECKING = False  # worker-check imports neither typing nor dataclasses (and its inspect) at run time
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

from celery_probe.numbers import number
from celery_probe.worker.evidence import (
    CONNECTING,
    FILES,
    LIVENESS,
    MAX_AGE_INTERVALS,
    READINESS,
    STOPPING,
    VERSION,
)

EXIT_OK = 0
EXIT_FAILED = 1  # the evidence says the worker is not alive / not ready
EXIT_NO_EVIDENCE = 2  # no usable evidence file: missing, unreadable, corrupt, another kind
EXIT_USAGE = 64  # bad option, or the folder does not exist


class Judgement:
    """An exit code and the one line that explains it."""

    __slots__ = ("code", "line")

    def __init__(self, code: int, line: str) -> None:
        self.code = code
        self.line = line

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Judgement) and (self.code, self.line) == (other.code, other.line)

    def __repr__(self) -> str:
        return f"Judgement({self.code!r}, {self.line!r})"

    @property
    def ok(self) -> bool:
        return self.code == EXIT_OK


class BadEvidence(ValueError):
    """The file parsed as JSON but is not a record of the expected kind (its message says why)."""


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value >= 10 else f"{value:.1f}s"


def _field(record: dict[str, Any], name: str, kinds: tuple[type, ...]) -> Any:
    value = record.get(name)
    if kinds == (float,):
        found = number(value)
        if found is None:
            raise BadEvidence(f"field {name!r} is not a number")
        return float(found)
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        raise BadEvidence(f"field {name!r} is missing or of the wrong type")
    return value


def _busy(record: dict[str, Any]) -> tuple[str, str, float] | None:
    busy = record.get("busy")
    if busy is None:
        return None
    if not isinstance(busy, dict):
        raise BadEvidence("field 'busy' is not an object")
    since = number(busy.get("since"))
    if since is None:
        raise BadEvidence("field 'busy.since' is not a number")
    return str(busy.get("task") or "?"), str(busy.get("id") or "?"), float(since)


def check_record(record: Any, kind: str) -> None:
    """Raise :class:`BadEvidence` unless ``record`` is a ``kind`` record this version can judge."""
    if not isinstance(record, dict):
        raise BadEvidence("it is not a JSON object")
    if record.get("kind") != kind:
        raise BadEvidence(f"it is not a {kind} record (kind {record.get('kind')!r})")
    version = record.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        raise BadEvidence(f"record version {version!r} is not one this celery-probe reads (up to {VERSION})")
    _field(record, "worker", (str,))
    _field(record, "pid", (int,))
    _field(record, "updated", (float,))
    if not _field(record, "interval", (float,)) > 0:
        raise BadEvidence("field 'interval' is not positive")
    _busy(record)
    if kind == READINESS:
        _field(record, "ready", (bool,))


def default_max_age(record: dict[str, Any]) -> float:
    return MAX_AGE_INTERVALS * float(record["interval"])


def judge(record: Any, kind: str, *, now: float, max_age: float | None = None,
          max_busy: float | None = None, pid_alive: Callable[[int], bool] | None = None,
          started: Callable[[int], int | None] | None = None) -> Judgement:
    """Whether ``record`` (a parsed ``kind`` file) still holds at ``now`` (unix seconds).

    ``started(pid)`` gives when the process ``pid`` now running started (None: no such
    process): a record whose ``pid_start`` differs was written by a worker that is gone,
    however fresh it is. That is a restarted container, where the new worker often gets the
    dead one's pid and has not written yet.
    """
    name = FILES[kind]
    try:
        check_record(record, kind)
    except BadEvidence as exc:
        return Judgement(EXIT_NO_EVIDENCE, f"{kind}: unusable evidence in {name}: {exc}")
    limit = default_max_age(record) if max_age is None else max_age
    busy_limit = limit if max_busy is None else max_busy
    by = f"{record['worker']} pid {record['pid']}"
    age = max(0.0, now - float(record["updated"]))
    pid_start = record.get("pid_start")
    if started is not None and isinstance(pid_start, int) and not isinstance(pid_start, bool):
        running = started(int(record["pid"]))
        if running != pid_start:
            now_there = "no process has that pid now" if running is None else "another process has that pid now"
            return Judgement(EXIT_FAILED, f"{kind}: written {_seconds(age)} ago by {by}, which is gone "
                                          f"({now_there}; a restarted worker has not written yet)")
    busy = _busy(record)
    fresh = age <= limit
    excused = busy is not None or (kind == LIVENESS and record.get("state") in (CONNECTING, STOPPING))
    stopping = kind == LIVENESS and record.get("state") == STOPPING  # its last write comes just before exit
    if ((not fresh and excused) or stopping) and pid_alive is not None and not pid_alive(int(record["pid"])):
        state = "stopped" if stopping else f"stale for {_seconds(age)} (max age {_seconds(limit)})"
        return Judgement(EXIT_FAILED, f"{kind}: {state} and the worker's pid {record['pid']} is gone, "
                                      f"last update by {by}")
    if not fresh and busy is not None:
        task, task_id, since = busy
        running = max(0.0, now - since)
        if running > busy_limit:
            return Judgement(EXIT_FAILED, f"{kind}: busy in task {task!r} ({task_id}) for {_seconds(running)} "
                                          f"(max busy {_seconds(busy_limit)}), last update by {by}")
        if kind == LIVENESS:
            return Judgement(EXIT_OK, f"{kind}: ok, busy in task {task!r} for {_seconds(running)} "
                                      f"(max busy {_seconds(busy_limit)}), {by}")
        fresh = True  # a busy solo worker keeps the readiness it last reported
    if kind == LIVENESS:
        return _liveness(record, age, limit, fresh, by, now)
    return _readiness(record, age, limit, fresh, by, now)


def _liveness(record: dict[str, Any], age: float, limit: float, fresh: bool, by: str,
              now: float) -> Judgement:
    state = record.get("state")
    if state in (CONNECTING, STOPPING):
        since = number(record.get("since"))
        how_long = f" for {_seconds(max(0.0, now - since))}" if since is not None else ""
        doing = ("connecting to the broker", "the broker is away, not the worker") if state == CONNECTING else (
            "stopping", "a warm shutdown waits for its tasks")
        return Judgement(EXIT_OK, f"liveness: ok, {doing[0]}{how_long} ({doing[1]}), {by}")
    if not fresh:
        return Judgement(EXIT_FAILED, f"liveness: stale for {_seconds(age)} (max age {_seconds(limit)}), "
                                      f"last update by {by}")
    return Judgement(EXIT_OK, f"liveness: ok, updated {_seconds(age)} ago by {by}")


def _readiness(record: dict[str, Any], age: float, limit: float, fresh: bool, by: str,
               now: float) -> Judgement:
    if not fresh:
        return Judgement(EXIT_FAILED, f"readiness: stale for {_seconds(age)} (max age {_seconds(limit)}), "
                                      f"last update by {by}")
    if not record["ready"]:
        since = number(record.get("not_ready_since"))
        how_long = f" for {_seconds(max(0.0, now - since))}" if since is not None else ""
        reason = record.get("reason") or "no reason given"
        return Judgement(EXIT_FAILED, f"readiness: not ready{how_long}: {reason} ({by})")
    queues = record.get("queues")
    consumed = queues.get("consumed") if isinstance(queues, dict) else None
    what = (", ".join(repr(str(q)) for q in consumed) if isinstance(consumed, list) and consumed
            else "its queues")
    return Judgement(EXIT_OK, f"readiness: ready, consuming {what}, updated {_seconds(age)} ago by {by}")
