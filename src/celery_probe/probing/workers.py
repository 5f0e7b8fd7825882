"""Worker ping and activity, through Celery's remote-control broadcast.

``app.control.ping(timeout=1)`` waits its whole timeout because it does not know how many
replies to expect. Here the wait ends as soon as the expected number of workers replied
(``limit``), and without an expectation after a short idle window: kombu's reply
collector treats the timeout as the longest gap between two replies, so the window only
has to cover one reply's latency, not a guess at the slowest worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Connection


@contextmanager
def fresh_connection(app: Celery) -> Iterator[Connection]:
    """A connection of its own for one broadcast, closed afterwards.

    On Redis, a reply wait that ends by timeout leaves a ``BRPOP`` in flight on its
    connection; the next broadcast on that connection would first wait for it (up to a
    second). A new connection costs about a millisecond on loopback.
    """
    conn = app.connection_for_write()
    try:
        yield conn
    finally:
        try:
            conn.close()
        except Exception:
            pass


@dataclass
class WorkerReply:
    """One worker's answer to ping."""

    name: str
    latency_ms: float
    answered_at: str


@dataclass
class PingResult:
    """Who answered, how fast, and how long we listened."""

    replies: list[WorkerReply] = field(default_factory=list)
    waited_ms: float = 0.0
    expected: int | None = None
    error: str | None = None

    @property
    def names(self) -> list[str]:
        return [reply.name for reply in self.replies]


def ping_workers(app: Celery, *, window: float, expect: int | None, budget: float) -> PingResult:
    """Broadcast ``ping`` and collect replies until ``expect`` arrive or ``window`` passes idle.

    With an expectation the call returns on the N-th reply; with fewer workers alive it
    returns one idle window after the last reply, leaving the rest of the deadline to the
    other probes. ``budget`` caps the window so a short remaining deadline is honoured.
    """
    replies: list[WorkerReply] = []
    started = time.perf_counter()

    def on_reply(body: dict[str, Any]) -> None:
        now = time.perf_counter()
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        for name in body:
            replies.append(WorkerReply(str(name), round((now - started) * 1000, 3), stamp))

    idle = max(0.01, min(window, budget))
    with fresh_connection(app) as conn:
        app.control.broadcast(
            "ping", reply=True, timeout=idle, limit=expect, callback=on_reply, connection=conn
        )
    waited = (time.perf_counter() - started) * 1000
    unique = {reply.name: reply for reply in replies}
    return PingResult(sorted(unique.values(), key=lambda r: r.name), round(waited, 3), expect)


@dataclass
class WorkerActivity:
    """What each worker is doing, as its remote-control answers say."""

    active: dict[str, int] = field(default_factory=dict)
    reserved: dict[str, int] = field(default_factory=dict)
    scheduled: dict[str, int] = field(default_factory=dict)
    queues: dict[str, list[str]] = field(default_factory=dict)
    concurrency: dict[str, int] = field(default_factory=dict)
    prefetch: dict[str, int] = field(default_factory=dict)  # ``prefetch_count`` as the worker reports it
    busy_by_queue: dict[str, int] = field(default_factory=dict)
    answered: list[str] = field(default_factory=list)
    broadcast: set[str] = field(default_factory=set)  # consumed through a fanout exchange

    def consumers_of(self, queue: str) -> list[str]:
        return sorted(worker for worker, names in self.queues.items() if queue in names)


def inspect_activity(app: Celery, workers: list[str], *, timeout: float) -> WorkerActivity:
    """Ask exactly the workers that answered ping, so each call returns on the last reply."""
    activity = WorkerActivity()
    if not workers:
        return activity
    # One connection for the five questions: each ends on the last expected reply, so no
    # BRPOP is left in flight between them (only a silent worker makes one wait the timeout).
    with fresh_connection(app) as conn:
        inspect = app.control.inspect(
            destination=workers, timeout=timeout, limit=len(workers), connection=conn
        )
        active = inspect.active() or {}
        reserved = inspect.reserved() or {}
        scheduled = inspect.scheduled() or {}
        queues = inspect.active_queues() or {}
        stats = inspect.stats() or {}
    activity.answered = sorted(set(active) | set(queues))
    for name in workers:
        activity.active[name] = len(active.get(name) or [])
        activity.reserved[name] = len(reserved.get(name) or [])
        activity.scheduled[name] = len(scheduled.get(name) or [])
        _record_queues(activity, name, queues.get(name))
        pool = (stats.get(name) or {}).get("pool") or {}
        concurrency = pool.get("max-concurrency")
        if isinstance(concurrency, int):
            activity.concurrency[name] = concurrency
        prefetch = (stats.get(name) or {}).get("prefetch_count")
        if isinstance(prefetch, int):
            activity.prefetch[name] = prefetch
        for request in active.get(name) or []:
            key = ((request or {}).get("delivery_info") or {}).get("routing_key")
            if key:
                activity.busy_by_queue[str(key)] = activity.busy_by_queue.get(str(key), 0) + 1
    return activity


def _record_queues(activity: WorkerActivity, name: str, reply: Any) -> None:
    """The queues one worker's ``active_queues`` reply names, into ``activity``."""
    consumed = [q for q in (reply or []) if isinstance(q, dict)]
    activity.queues[name] = sorted(str(q.get("name")) for q in consumed)
    # A Broadcast queue is one per worker (``bcast.<uuid>``): it says nothing about
    # where tasks wait, so it is not added to the watch list.
    activity.broadcast |= {str(q.get("name")) for q in consumed
                           if ((q.get("exchange") or {}).get("type")) == "fanout"}


def reask_queues(app: Celery, activity: WorkerActivity, workers: list[str], *, timeout: float) -> None:
    """Ask ``workers`` again which queues they consume, and record what they answer now.

    A worker whose consumer is (re)starting (just after start-up, or reconnecting to the
    broker) answers ``active_queues`` with no queue at all for a moment: one such answer is
    no evidence that its queues have no consumer.
    """
    with fresh_connection(app) as conn:
        inspect = app.control.inspect(destination=workers, timeout=timeout, limit=len(workers), connection=conn)
        queues = inspect.active_queues() or {}
    for name in workers:
        if queues.get(name):
            _record_queues(activity, name, queues.get(name))


def pidbox_bindings(conn: Connection, control_exchange: str) -> list[str] | None:
    """The remote-control queues bound on Redis (``<worker>.<exchange>.pidbox``); None elsewhere.

    kombu's Redis fanout is PUBLISH/SUBSCRIBE: a ping leaves nothing in any list, and a
    frozen worker's subscription looks like a live one. What stays is the binding set
    ``_kombu.binding.<exchange>.pidbox``, one member per worker that bound its queue
    (removed when a worker shuts down, left behind when it is killed). An empty set means
    no worker listens, so there is no point waiting for heartbeats.
    """
    from celery_probe.probing.redis_access import key_prefix, plain_client, transport_name

    if transport_name(conn) != "redis":
        return None
    channel: Any = conn.default_channel
    key = f"{key_prefix(channel)}_kombu.binding.{control_exchange}.pidbox"
    members = plain_client(channel).smembers(key) or set()
    separator = "\x06\x16"
    names = {(m.decode(errors="replace") if isinstance(m, bytes) else str(m)).split(separator)[-1]
             for m in members}
    return sorted(n for n in names if n)
