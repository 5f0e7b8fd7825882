"""Worker ping and activity, through Celery's remote-control broadcast.

``app.control.ping(timeout=1)`` waits its whole timeout because it does not know how many
replies to expect. Here the wait ends as soon as the expected number of workers answered,
and without an expectation after a short idle window: the window is the longest gap
between two answers (as in kombu's own reply collector), so it only has to cover one
answer's latency, not a guess at the slowest worker.

The ping and the five questions of :func:`ask_workers` go out together in one round
(:mod:`celery_probe.probing.control_round`), not as six broadcasts one after another.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celery_probe.probing.control_round import WorkerReply, ask_round

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Connection


@contextmanager
def fresh_connection(app: Celery) -> Iterator[Connection]:
    """A connection of its own for one broadcast, closed afterwards.

    On Redis, a reply wait that ends by timeout leaves a ``BRPOP`` in flight on its
    connection; the next broadcast on that connection would first wait for it (up to a
    second). A new connection costs about a millisecond on loopback.

    On Redis the round's connection also waits in one long ``BRPOP`` rather than the short
    steps :func:`celery_probe.probing.app.bound_app` gives every other connection: the
    steps were there so that closing would not wait for a step, and :func:`drop_blocking_read`
    now hangs one up instead. Between two steps kombu sleeps a step, so an answer that came
    then was read (and its latency measured) up to a step late.
    """
    from celery_probe.probing.redis_access import transport_name

    options = {"polling_interval": None} if transport_name(str(app.conf.broker_url or "")) == "redis" else {}
    conn = app.connection_for_write(transport_options=options)
    try:
        yield conn
    finally:
        try:
            for channel in list(getattr(conn.transport, "channels", None) or ()):
                drop_blocking_read(channel)
            conn.close()
        except Exception:
            pass


def drop_blocking_read(channel: Any) -> None:
    """Hang up a Redis channel's ``BRPOP`` in flight instead of waiting for its answer.

    kombu's ``Channel.close`` first reads the answer of a ``BRPOP`` it sent, and the server
    gives it only at the command's own timeout (kombu's ``brpop_timeout``, 1 s): a round
    that ended by its 0.3 s idle window spent 0.8 s more in ``close``, on every run without
    ``--expect-workers``. Closing the socket ends the ``BRPOP`` on the server at once. An
    answer that came in that instant is lost, and that is fine: the round is over, and
    nothing else reads its reply queue. Other transports have no such read (no ``_in_poll``).
    """
    in_poll = getattr(channel, "_in_poll", None)
    if in_poll is None:
        return
    channel._in_poll = None  # as kombu's own read does once the answer is in
    in_poll.disconnect()


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


INSPECT_QUESTIONS = ("active", "reserved", "scheduled", "active_queues", "stats")


def ping_workers(app: Celery, *, window: float, expect: int | None, budget: float) -> PingResult:
    """Broadcast ``ping`` and collect replies until ``expect`` arrive or ``window`` passes idle."""
    ping, _activity = ask_workers(app, window=window, expect=expect, budget=budget, inspect=False)
    return ping


def ask_workers(
    app: Celery, *, window: float, expect: int | None, budget: float, inspect: bool = True, patience: float = 1.0
) -> tuple[PingResult, WorkerActivity | None]:
    """Ping every worker and, with ``inspect``, ask what it is doing, all in one round.

    With an expectation the round ends when ``expect`` workers answered everything; with
    fewer workers alive, or none expected, one idle ``window`` after the last answer, leaving
    the rest of the deadline to the other probes. ``budget`` caps the window (and the round)
    so a short remaining deadline is honoured. While a worker that answered still owes an
    answer, the round waits up to ``patience`` for it (a ``stats`` takes longer than a ping).
    """
    questions = ("ping", *INSPECT_QUESTIONS) if inspect else ("ping",)
    idle = max(0.01, min(window, budget))
    with fresh_connection(app) as conn:
        found = ask_round(app, conn, questions, idle=idle, patience=max(idle, patience), budget=max(idle, budget),
                          expect=expect)
    ping = PingResult(sorted(found.first_answers.values(), key=lambda reply: reply.name), found.waited_ms, expect)
    if not inspect:
        return ping, None
    return ping, activity_from(found.answers, ping.names)


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


def activity_from(answers: dict[str, dict[str, Any]], workers: list[str]) -> WorkerActivity:
    """The activity of ``workers`` from their answers to :data:`INSPECT_QUESTIONS`."""
    activity = WorkerActivity()
    active, reserved, scheduled, queues, stats = (answers.get(question) or {} for question in INSPECT_QUESTIONS)
    activity.answered = sorted((set(active) | set(queues)) & set(workers))
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
        found = ask_round(app, conn, ("active_queues",), idle=timeout, patience=timeout, budget=timeout,
                          destination=workers)
    queues = found.answers["active_queues"]
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
