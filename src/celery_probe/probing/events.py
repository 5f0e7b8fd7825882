"""Listen to Celery task events for a bounded window: runtimes per task type.

Workers publish task events only when started with ``-E`` (or ``worker_send_task_events``);
nothing here asks them to (no ``enable_events`` broadcast: other tools rely on the workers'
setting staying as it is). The listener uses Celery's public
:class:`celery.events.EventReceiver` on a fresh connection of its own, with an
auto-delete queue that goes when the listener does:

* on Redis the "queue" is a PUBLISH/SUBSCRIBE binding in ``_kombu.binding.<exchange>``,
  removed when the channel closes;
* on RabbitMQ it is an auto-delete queue bound to the ``celeryev`` topic exchange. The
  exchange itself is declared by every worker that sends an event, so when it does not
  exist no worker sends events: the window is skipped rather than leave an exchange of
  ours behind.

A ``task-succeeded`` event carries the task's ``uuid`` and ``runtime`` but not its name;
the name comes from the ``task-received`` event of the same task. A task received before
the window opened is counted as ``unnamed``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from celery_probe.probing.deadline import ProbeTimeout, alarm
from celery_probe.probing.redis_access import transport_name

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Connection

SLICE = 0.1  # seconds per drain, so the window ends on time however quiet the broker is
CLOSE_GRACE = 0.15  # seconds each cleanup step may take; a frozen broker would hold it for the socket timeout
HEARTBEAT_KEY = "worker.heartbeat"  # routing key of the worker-heartbeat event
MAX_TRACKED = 100_000  # task ids remembered for their names; a flood cannot grow memory unbounded


@dataclass
class EventWindow:
    """What one listening window saw."""

    listened_s: float = 0.0
    events: int = 0  # events of any type, worker heartbeats included
    task_events: int = 0  # task-* events: zero when no worker sends task events (no -E)
    runtimes: dict[str, list[float]] = field(default_factory=dict)  # task name -> seconds
    failed: dict[str, int] = field(default_factory=dict)  # task name -> task-failed events
    unnamed: int = 0  # task-succeeded/-failed whose task-received came before the window
    skipped: str | None = None  # why nothing was listened to, if so

    def add_runtime(self, name: str, runtime: float) -> None:
        self.runtimes.setdefault(name, []).append(runtime)

    def add_failure(self, name: str) -> None:
        self.failed[name] = self.failed.get(name, 0) + 1


class _Collector:
    """Event handlers that join ``task-received`` names to later outcomes."""

    def __init__(self, window: EventWindow, exclude: frozenset[str]) -> None:
        self.window = window
        self.exclude = exclude
        self.names: dict[str, str] = {}

    def any_event(self, event: dict[str, Any]) -> None:
        self.window.events += 1
        if str(event.get("type", "")).startswith("task-"):
            self.window.task_events += 1

    def received(self, event: dict[str, Any]) -> None:
        self._count(event)
        uuid, name = event.get("uuid"), event.get("name")
        if isinstance(uuid, str) and isinstance(name, str) and len(self.names) < MAX_TRACKED:
            self.names[uuid] = name

    def succeeded(self, event: dict[str, Any]) -> None:
        if not self._count(event):
            return
        runtime = event.get("runtime")
        if isinstance(runtime, bool) or not isinstance(runtime, (int, float)) or runtime < 0:
            return  # runtime is None for some outcomes (a result already stored elsewhere)
        if (name := self._name(event)) is not None:
            self.window.add_runtime(name, float(runtime))

    def failed(self, event: dict[str, Any]) -> None:
        if self._count(event) and (name := self._name(event)) is not None:
            self.window.add_failure(name)

    def _count(self, event: dict[str, Any]) -> bool:
        """Count a task event; False when it is about one of the probe's own tasks."""
        self.window.events += 1
        self.window.task_events += 1
        uuid = event.get("uuid")
        return not (isinstance(uuid, str) and uuid in self.exclude)

    def _name(self, event: dict[str, Any]) -> str | None:
        """The task's name from its ``task-received``, forgotten now; None (counted unnamed) if unseen."""
        uuid = event.get("uuid")
        name = self.names.pop(uuid, None) if isinstance(uuid, str) else None
        if name is None:
            self.window.unnamed += 1
        return name

    def handlers(self) -> dict[str, Any]:
        return {"task-received": self.received, "task-succeeded": self.succeeded,
                "task-failed": self.failed, "*": self.any_event}


def events_exchange_exists(conn: Connection, name: str) -> bool:
    """Whether the events exchange exists (always True where exchanges are not real).

    On AMQP a passive declare of a missing exchange closes the channel with 404; that
    channel is thrown away. Redis fanout needs no declared exchange.
    """
    if transport_name(conn) != "amqp":
        return True
    from kombu import Exchange

    channel = conn.channel()
    try:
        Exchange(name, type="topic", channel=channel).declare(passive=True)
        return True
    except conn.channel_errors:
        return False
    finally:
        try:
            channel.close()
        except Exception:  # noqa: BLE001 - already closed by the broker's 404
            pass


def listen(app: Celery, seconds: float, *, exclude: frozenset[str] = frozenset()) -> EventWindow:
    """Collect task events for ``seconds`` on a fresh connection; close everything after.

    ``exclude`` holds task ids not to count (the probe's own round-trip tasks). The caller
    bounds the whole call with the run's deadline; this function also stops on time.
    """
    from kombu import Consumer

    window = EventWindow()
    collector = _Collector(window, exclude)
    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        if not events_exchange_exists(conn, app.conf.event_exchange):
            window.skipped = f"the {app.conf.event_exchange} exchange does not exist: no worker has sent events"
            return window
        channel = conn.channel()
        try:
            receiver = app.events.Receiver(channel, handlers=collector.handlers())
            consumers = receiver.get_consumers(partial(Consumer, channel), channel)
            window.listened_s = _drain(conn, consumers, seconds)
        finally:
            _quietly(channel.close)  # Redis removes the fanout binding here
    return window


def listen_heartbeats(app: Celery, seconds: float) -> dict[str, str]:
    """``{hostname: content type}`` of the ``worker-heartbeat`` events seen within ``seconds``.

    A worker whose remote control stays silent may still be alive: its heartbeats (every
    2 s unless started ``--without-heartbeat``) say so. They are not decoded: a heartbeat
    signed with Celery's ``auth`` serializer cannot be read without the workers'
    certificates, and the hostname header and the content type are all this needs. The
    window ends at the first heartbeat. Same listener as :func:`listen`.
    """
    from kombu import Consumer, Queue

    seen: dict[str, str] = {}

    def on_message(message: Any) -> None:
        hostname = (message.headers or {}).get("hostname")
        seen[str(hostname or "?")] = str(message.content_type or "")

    with app.connection_for_read() as conn:
        conn.ensure_connection(max_retries=1)
        if not events_exchange_exists(conn, app.conf.event_exchange):
            return seen
        channel = conn.channel()
        try:
            # The receiver's own queue has an expiry, which kombu's Redis transport books in
            # _kombu.binding_deadlines and leaves there; a plain auto-delete queue leaves nothing.
            exchange = app.events.Receiver(channel).exchange
            queue = Queue(f"celeryev.probe-{uuid.uuid4()}", exchange=exchange, routing_key=HEARTBEAT_KEY,
                          auto_delete=True, durable=False)
            consumer = Consumer(channel, queues=[queue], on_message=on_message, no_ack=True)
            _drain(conn, [consumer], seconds, until=lambda: bool(seen))
        finally:
            _quietly(channel.close)
    return seen


def _drain(conn: Connection, consumers: list[Any], seconds: float, until: Any = None) -> float:
    """Consume for ``seconds`` (or until ``until()`` holds), then cancel; return seconds listened."""
    started = time.monotonic()
    end = started + seconds
    for consumer in consumers:
        consumer.consume()
    try:
        while (left := end - time.monotonic()) > 0 and not (until and until()):
            try:
                conn.drain_events(timeout=min(SLICE, left))
            except TimeoutError:  # socket.timeout: the slice passed quietly
                pass
    finally:
        listened = round(time.monotonic() - started, 3)
        for consumer in consumers:
            _quietly(consumer.cancel)
    return listened


def _quietly(action: Any) -> None:
    """Run a cleanup step for at most :data:`CLOSE_GRACE` seconds, ignoring its errors.

    A broker that froze during the window accepts the request and never answers; the
    step is abandoned so the window's result still reaches the report. An inner alarm
    that fires is swallowed here; leaving it re-arms the run's own alarm with what is left.
    """
    try:
        with alarm(CLOSE_GRACE, "closing the events listener"):
            action()
    except (Exception, ProbeTimeout):  # noqa: BLE001 - cleanup on a broken connection must not hide the result
        pass
