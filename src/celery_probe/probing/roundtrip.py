"""A real task through each queue, with nothing installed on the workers.

Every Celery worker registers the built-in ``celery.accumulate``, which returns its
arguments. Sending it through a queue and reading the result back proves that a worker
consumes that queue, runs tasks and stores results: ping alone cannot (a prefork parent
answers ping while every child is busy). Each result is forgotten afterwards so a probe
run every minute leaves no ``celery-task-meta-*`` keys behind.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path
from dataclasses import dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery_probe.errors import describe_error

if TYPE_CHECKING:
    from celery import Celery
    from celery.result import AsyncResult
    from kombu import Connection

from celery_probe.probing.deadline import Deadline


@dataclass
class Trip:
    """One task on its way through one queue."""

    queue: str
    token: str
    sent_at: float
    result: AsyncResult | None = None
    latency_ms: float | None = None
    error: str | None = None
    saturated: str | None = None  # why the queue could not take the task: every consumer busy
    timed_out: bool = False  # no result within the wait (an error of its own otherwise)
    starved: str | None = None  # the wait was too short to count: the prober's own lack of time
    unconfirmed: str | None = None  # why the result cannot reach this probe: it reads another backend

    @property
    def ok(self) -> bool:
        return self.latency_ms is not None and self.error is None


def rotate(queues: list[str], limit: int, cursor: int) -> tuple[list[str], int]:
    """The queues that get a round trip this run, and the cursor for the next run.

    With more queues than ``limit``, a window of ``limit`` queues moves along the list by
    one window per run (wrapping around), so every queue gets a round trip every
    ``ceil(len / limit)`` runs while each run publishes at most ``limit`` tasks.
    """
    if limit <= 0 or len(queues) <= limit:
        return list(queues), 0
    start = cursor % len(queues)
    chosen = [queues[(start + i) % len(queues)] for i in range(limit)]
    return chosen, (start + limit) % len(queues)


def cursor_path(folder: Path, key: str) -> Path:
    """Where the rotation cursor of one target lives (named by a hash, no URL in a path)."""
    return folder / f".roundtrip-cursor-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def read_cursor(path: Path) -> int:
    try:
        return max(0, int(path.read_text().strip() or 0))
    except (OSError, ValueError):
        return 0


def write_cursor(path: Path, value: int) -> None:
    from celery_probe.storage.reports import atomic_write_text

    try:
        atomic_write_text(path, f"{value}\n")
    except OSError:
        pass  # rotation then restarts at the first window: never worth failing a run


def has_result_backend(app: Celery) -> bool:
    from celery.backends.base import DisabledBackend

    return not isinstance(app.backend, DisabledBackend)


def direct_route(queue: str) -> dict[str, Any]:
    """``send_task`` options that put a message into ``queue`` itself and declare nothing.

    By default ``send_task(queue=name)`` declares the queue first, the way the sending app
    would define it: against a RabbitMQ quorum queue or one with ``x-max-priority`` that
    declaration fails (PRECONDITION_FAILED, inequivalent arguments), and for a queue
    bound with another routing key it creates an exchange and a binding of its own.
    The broker's default exchange needs neither: RabbitMQ binds every queue to it under
    the queue's name, kombu's virtual transports (Redis, SQS…) put such a message
    straight into the named queue, and Celery itself publishes to direct queues that way.
    Explicit ``exchange`` and ``routing_key`` also win over any ``task_routes`` entry the
    app has for the probe task.
    """
    from kombu import Exchange, Queue

    target = Queue(queue, Exchange("", type="direct"), routing_key=queue, no_declare=True)
    return {"queue": target, "exchange": "", "routing_key": queue, "declare": []}


def send_trips(
    app: Celery, task_name: str, queues: list[str], *, expires: float, connection: Connection | None = None
) -> list[Trip]:
    """Publish one probe task per queue at once, so waiting for them overlaps.

    ``connection``: the run's open broker connection, so the tasks do not open another one
    through the app's producer pool (a connection and a channel more on every run).
    """
    trips = []
    for queue in queues:
        token = f"celery-probe-{uuid.uuid4().hex}"
        trip = Trip(queue=queue, token=token, sent_at=time.perf_counter())
        try:
            trip.result = app.send_task(
                task_name, args=(token,), expires=expires, retry=False, connection=connection,
                **direct_route(queue),
            )
        except Exception as exc:
            trip.error = f"could not publish: {describe_error(exc)}"
        trips.append(trip)
    return trips


def collect_trips(
    trips: list[Trip], deadline: Deadline, *, wait: float, gate: Callable[[], bool] | None = None
) -> None:
    """Poll every pending result until all are in or ``wait`` seconds have passed.

    ``AsyncResult.get(timeout=t)`` can overshoot ``t`` by up to a second (the Redis
    result consumer drains in one-second steps), so results are polled with ``ready()``,
    one cheap key read each, in short growing steps. While ``gate`` returns False the
    results are not read at all (a sqlite backend file that does not exist yet: reading
    would create it).
    """
    pending = [t for t in trips if t.result is not None and t.error is None]
    end = time.monotonic() + max(0.0, deadline.within(wait))
    step = 0.002
    while pending:
        for trip in list(pending) if gate is None or gate() else []:
            try:
                done = trip.result.ready()  # type: ignore[union-attr]
            except Exception as exc:
                trip.error = f"could not read the result: {describe_error(exc)}"
                pending.remove(trip)
                continue
            if done:
                _judge(trip)
                pending.remove(trip)
        now = time.monotonic()
        if not pending or now >= end:
            break
        time.sleep(min(step, end - now))
        step = min(step * 1.5, 0.025)
    for trip in pending:
        trip.error = f"no result within {wait:.2f}s"
        trip.timed_out = True


def _judge(trip: Trip) -> None:
    assert trip.result is not None
    elapsed = round((time.perf_counter() - trip.sent_at) * 1000, 3)
    state = trip.result.state
    value: Any = trip.result.result
    if state != "SUCCESS":
        trip.error = f"task ended in state {state}: {value!r}"[:300]
    elif value != [trip.token] and value != (trip.token,):
        trip.error = f"unexpected result {value!r}"[:300]
    else:
        trip.latency_ms = elapsed


def forget_trips(trips: list[Trip]) -> None:
    """Delete the stored results so repeated runs leave no litter in the backend."""
    for trip in trips:
        if trip.result is None:
            continue
        try:
            trip.result.forget()
        except Exception:
            pass
