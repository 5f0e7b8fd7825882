"""Broker and result-backend access: reachability and true queue depth.

Queue depth on Redis is not ``LLEN queue``: kombu keeps each priority step in its own
list (``queue``, ``queue\\x06\\x163``, …) under an optional ``global_keyprefix``, and
messages a worker has taken but not acknowledged sit in the ``unacked`` hash. All lists
of all watched queues are read in one pipelined round trip. Other transports (RabbitMQ,
filesystem, SQS…) answer a passive ``queue_declare`` with their message and consumer
counts.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from celery_probe.errors import describe_error
from celery_probe.probing.redis_access import transport_name

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Connection

UNACKED_DETAIL_CAP = 1000  # read per-queue unacked detail only while the hash is this small


def is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` says that an answer did not come in time (not that it was refused)."""
    if isinstance(exc, TimeoutError):  # socket.timeout, asyncio's, and redis-py's subclass it
        return True
    return any("Timeout" in cls.__name__ for cls in type(exc).__mro__)


@dataclass
class BrokerCheck:
    """Whether the broker answered, how fast, and on which transport."""

    reachable: bool
    transport: str
    latency_ms: float | None = None
    error: str | None = None
    timed_out: bool = False  # no answer in time (judged against the wait's fair share)


@dataclass
class BackendCheck:
    """Whether results can be read back at all, and whether the backend answered."""

    configured: bool
    backend: str
    reachable: bool | None = None
    latency_ms: float | None = None
    error: str | None = None
    timed_out: bool = False  # no answer in time (judged against the wait's fair share)


@dataclass
class QueueDepth:
    """What the broker says about one queue."""

    name: str
    length: int = 0
    by_priority: dict[str, int] = field(default_factory=dict)
    unacked: int | None = None
    broker_consumers: int | None = None
    exists: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_connection(app: Celery) -> Connection:
    """A broker connection of the app's own settings (URL, transport options, SSL)."""
    return app.connection_for_write()


def check_broker(conn: Connection) -> BrokerCheck:
    """Connect (kombu's Redis channel pings the server on creation) and time it."""
    transport = transport_name(conn)
    started = time.perf_counter()
    try:
        # No retries: kombu's first retry sleeps 2 s, longer than many a deadline.
        conn.ensure_connection(max_retries=0)
        conn.default_channel  # noqa: B018 - creating the channel proves the broker answers
    except Exception as exc:
        return BrokerCheck(False, transport, error=describe_error(exc), timed_out=is_timeout(exc))
    return BrokerCheck(True, transport, latency_ms=(time.perf_counter() - started) * 1000)


def check_backend(app: Celery) -> BackendCheck:
    """Ping the result backend where the backend has a cheap ping (Redis)."""
    from celery.backends.base import DisabledBackend

    backend = app.backend
    name = type(backend).__name__
    if isinstance(backend, DisabledBackend):
        return BackendCheck(False, name)
    client = getattr(backend, "client", None) if name in {"RedisBackend", "SentinelBackend"} else None
    if client is None:
        return BackendCheck(True, name)
    started = time.perf_counter()
    try:
        client.ping()
    except Exception as exc:
        return BackendCheck(True, name, reachable=False, error=describe_error(exc), timed_out=is_timeout(exc))
    return BackendCheck(True, name, reachable=True, latency_ms=(time.perf_counter() - started) * 1000)


def redis_queue_keys(queue: str, sep: str, steps: Iterable[int]) -> list[tuple[str, str]]:
    """``(priority label, key)`` for every list kombu may use for ``queue`` (without prefix)."""
    keys = [("0", queue)]
    for step in steps:
        if step:
            keys.append((str(step), f"{queue}{sep}{step}"))
    seen: set[str] = set()
    unique = []
    for label, key in keys:
        if key not in seen:
            seen.add(key)
            unique.append((label, key))
    return unique


def measure_queues(conn: Connection, queues: Sequence[str]) -> dict[str, QueueDepth]:
    """Depth of every watched queue, in as few broker round trips as the transport allows."""
    if transport_name(conn) == "redis":
        return _measure_redis(conn, queues)
    return _measure_by_declare(conn, queues)


def _measure_redis(conn: Connection, queues: Sequence[str]) -> dict[str, QueueDepth]:
    channel = conn.default_channel
    client = channel.client  # kombu's client adds global_keyprefix to LLEN/HLEN itself
    sep = channel.sep
    steps = list(channel.priority_steps)
    unacked_key = channel.unacked_key
    layout = {q: redis_queue_keys(q, sep, steps) for q in queues}
    with client.pipeline(transaction=False) as pipe:
        for keys in layout.values():
            for _label, key in keys:
                pipe.llen(key)
        pipe.hlen(unacked_key)
        answers = pipe.execute()
    unacked_total = int(answers[-1])
    depths: dict[str, QueueDepth] = {}
    position = 0
    for queue, keys in layout.items():
        by_priority = {}
        for label, _key in keys:
            by_priority[label] = int(answers[position])
            position += 1
        depths[queue] = QueueDepth(
            name=queue,
            length=sum(by_priority.values()),
            by_priority={k: v for k, v in by_priority.items() if v or k == "0"},
        )
    if unacked_total and unacked_total <= UNACKED_DETAIL_CAP:
        # HVALS is not among the commands kombu's client prefixes, so prefix it here.
        raw_key = f"{getattr(channel, 'global_keyprefix', '') or ''}{unacked_key}"
        per_key = _unacked_by_routing_key(client.hvals(raw_key))
        for queue, depth in depths.items():
            depth.unacked = per_key.get(queue, 0)
    elif unacked_total == 0:
        for depth in depths.values():
            depth.unacked = 0
    return depths


def _unacked_by_routing_key(values: Iterable[Any]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for raw in values:
        try:
            _message, exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        counts[str(routing_key or exchange)] += 1
    return counts


DELAYED_LEVELS = 28  # kombu's native delayed delivery: celery_delayed_0 .. celery_delayed_27


@dataclass
class DelayedBacklog:
    """Messages waiting out a countdown in RabbitMQ's native delayed delivery queues.

    Celery 5.5+ routes countdown and eta tasks for quorum queues (on a topic exchange)
    through the vhost's ``celery_delayed_*`` queues, one per bit of the delay, instead of
    handing them to a worker early. They are work to come, for every queue of the vhost,
    not the length of any watched queue.
    """

    messages: int
    queues: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def delayed_queue_names() -> list[str]:
    try:
        from kombu.transport.native_delayed_delivery import level_name
    except ImportError:  # kombu before 5.5 has no native delayed delivery
        return []
    return [level_name(level) for level in range(DELAYED_LEVELS)]


def measure_delayed(conn: Connection) -> DelayedBacklog | None:
    """The delayed-delivery backlog of the broker's vhost, or None where there is none.

    Only existing queues are asked, by passive declare: the highest level first, and the
    others only if it exists (a worker declares all of them at once), so a vhost without
    delayed delivery costs one refused declare.
    """
    if transport_name(conn) != "amqp":
        return None
    names = delayed_queue_names()
    if not names:
        return None
    top = _measure_by_declare(conn, names[-1:])[names[-1]]
    if not top.exists:
        return None
    depths = [top, *_measure_by_declare(conn, names[:-1]).values()]
    found = [depth for depth in depths if depth.exists]
    return DelayedBacklog(messages=sum(depth.length for depth in found), queues=len(found))


def _measure_by_declare(conn: Connection, queues: Sequence[str]) -> dict[str, QueueDepth]:
    from kombu.exceptions import ChannelError

    depths: dict[str, QueueDepth] = {}
    channel = conn.channel()
    try:
        for queue in queues:
            try:
                _name, messages, consumers = channel.queue_declare(queue=queue, passive=True)
            except ChannelError:
                depths[queue] = QueueDepth(name=queue, exists=False)
                channel = conn.channel()  # a 404 closes the channel on AMQP
                continue
            except Exception as exc:  # amqp's NotFound is not a kombu ChannelError
                if "NOT_FOUND" not in str(exc) and "404" not in str(exc):
                    raise
                depths[queue] = QueueDepth(name=queue, exists=False)
                channel = conn.channel()
                continue
            depths[queue] = QueueDepth(
                name=queue, length=int(messages), broker_consumers=int(consumers)
            )
    finally:
        try:
            channel.close()
        except Exception:
            pass
    return depths
