"""Gathering a review's facts: the app's configuration, the broker's answers, the workers' answers.

The only module of the room that does I/O. Everything it reads is read-only, with one exception
that is asked for: when task SLAs are configured, one no-op ``celery.accumulate`` per consumed
queue is sent (its result forgotten), because only a task that runs shows whether the workers
send task events (``-E`` does not show in ``inspect conf``).

Every step runs under the review's deadline: the app is bounded (socket timeouts, no retries)
after its own settings were read, and each step under an alarm for what is left, so a broker
that accepts TCP and never answers (SIGSTOP) ends the step with "no answer", never a hang.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from celery_probe.config.settings import Settings
from celery_probe.config.urls import redact_url, scrub
from celery_probe.doctor.facts import (
    AppFacts,
    BrokerFacts,
    ConsumedQueue,
    EventsFacts,
    Facts,
    QueuedEta,
    RedisFacts,
    TaskLimit,
    Unchecked,
    WorkerFacts,
)
from celery_probe.doctor.messages import decode, message_eta, unacked_entry, versions_from_report
from celery_probe.errors import describe_error
from celery_probe.probing.app import bound_app, error_line, import_app, pin_urls, probed_broker_url
from celery_probe.probing.backlog import task_name
from celery_probe.probing.broker import redis_queue_keys
from celery_probe.probing.deadline import Deadline, ProbeTimeout, alarm
from celery_probe.probing.events import events_exchange_exists
from celery_probe.probing.redis_access import key_prefix, plain_client, transport_name
from celery_probe.probing.watchlist import routed_queues
from celery_probe.probing.worker_config import backend_from_report, shown
from celery_probe.probing.workers import fresh_connection, ping_workers

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Connection

SET_KEYS = ("worker_cancel_long_running_tasks_on_connection_loss", "broker_connection_retry_on_startup",
            "task_time_limit", "task_soft_time_limit")
DEFAULT_VISIBILITY_TIMEOUT = 3600.0  # kombu's Redis transport
MAX_SCANNED = 20_000  # messages read for their ETA, over all queues and unacked
PAGE = 500
PING_WINDOW = 0.5
INSPECT_TIMEOUT = 1.5
EVENTS_WINDOW = 2.0
MAX_EVENT_QUEUES = 10
STEP_SOCKET_TIMEOUT = 2.0


class AppConfigFailed(Exception):
    """The app's own settings raised when read: nothing about the app can be reviewed."""


# ------------------------------------------------------------------------------------ the app


def load_app(settings: Settings, socket_timeout: float) -> tuple[Celery, AppFacts | Unchecked]:
    """The app to review and its own configuration, read before the app is bounded.

    An -A path that names nothing raises :class:`~celery_probe.errors.ProbeUsageError` (exit 64);
    an app whose settings raise, :class:`AppConfigFailed`.
    """
    from celery import Celery

    if not settings.app:
        app = Celery("celery_probe", set_as_current=False)
        pin_urls(app, settings)
        bound_app(app, socket_timeout)
        return app, Unchecked("no app given (-A): only the workers' own settings are known")
    app = import_app(settings.app, settings.sources.get("app", "-A/--app"))
    try:
        pin_urls(app, settings)
        facts = app_facts(app, settings.app)
        bound_app(app, socket_timeout)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - the app's settings module may raise anything
        raise AppConfigFailed(f"app {settings.app!r} did not load its configuration: {error_line(exc)}") from None
    return app, facts


def _set(conf: Any, key: str) -> bool:
    value_set_for = getattr(conf, "value_set_for", None)
    if value_set_for is not None:
        return bool(value_set_for(key))
    return key in conf.without_defaults()


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def app_facts(app: Celery, path: str) -> AppFacts:
    import celery
    import kombu

    conf = app.conf
    options = dict(conf.broker_transport_options or {})
    visibility = _number(options.get("visibility_timeout"))
    backend = conf.result_backend
    backend_shown = redact_url(str(backend)) if backend and str(backend) != "disabled" else None
    tasks = [TaskLimit(name, _number(getattr(task, "time_limit", None)), _number(getattr(task, "soft_time_limit", None)))
             for name, task in sorted(app.tasks.items()) if not name.startswith("celery.")]
    declared = [str(getattr(q, "name", q)) for q in (conf.task_queues or ()) if getattr(q, "name", q)]
    routed, unlisted = routed_queues(conf.task_routes)
    quorum = {}
    for name, queue in app.amqp.queues.items():
        if (queue.queue_arguments or {}).get("x-queue-type") == "quorum":
            quorum[str(name)] = str(getattr(queue.exchange, "type", None) or "direct")
    return AppFacts(
        path=path, celery_version=celery.__version__, kombu_version=kombu.__version__,
        set_keys=frozenset(key for key in SET_KEYS if _set(conf, key)),
        time_limit=_number(conf.task_time_limit), soft_time_limit=_number(conf.task_soft_time_limit),
        acks_late=bool(conf.task_acks_late),
        visibility_timeout=visibility or DEFAULT_VISIBILITY_TIMEOUT, visibility_timeout_set=visibility is not None,
        result_backend=backend_shown, tasks=tasks, declared_queues=declared, routed_queues=routed,
        default_queue=str(conf.task_default_queue or "celery"), unlisted_routers=unlisted,
        quorum_queues=quorum, send_task_events=bool(conf.worker_send_task_events),
    )


# ------------------------------------------------------------------------------------ steps


def _step(deadline: Deadline, seconds: float, what: str, action: Any) -> Any:
    """Run ``action()`` under an alarm of ``seconds`` (or what is left); ProbeTimeout says so."""
    budget = deadline.within(seconds)
    if budget <= 0.01:
        raise ProbeTimeout(f"the {deadline.total:g}s deadline was spent before {what}")
    with alarm(budget, what):
        return action()


def _why(exc: BaseException) -> str:
    if isinstance(exc, ProbeTimeout):
        return str(exc)
    return str(scrub(describe_error(exc)))


def _quietly_close(conn: Connection) -> None:
    _quietly(conn.release)


def _quietly(action: Any) -> None:
    """A cleanup step, for at most 0.2 s and whatever it raises: a frozen broker must not hold the review."""
    with contextlib.suppress(Exception, ProbeTimeout), alarm(0.2, "closing the broker connection"):
        action()


# ------------------------------------------------------------------------------------ workers


def ask_workers(app: Celery, deadline: Deadline) -> list[WorkerFacts] | Unchecked:
    try:
        ping = _step(deadline, PING_WINDOW + 1.0, "ping",
                     lambda: ping_workers(app, window=PING_WINDOW, expect=None, budget=deadline.within(PING_WINDOW)))
    except (Exception, ProbeTimeout) as exc:  # noqa: BLE001 - any failure is a reason
        return Unchecked(f"ping got no answer: {_why(exc)}")
    names = ping.names
    if not names:
        return []

    def inspect() -> dict[str, Any]:
        with fresh_connection(app) as conn:
            inspector = app.control.inspect(destination=names, timeout=INSPECT_TIMEOUT, limit=len(names),
                                            connection=conn)
            return {"conf": inspector.conf(with_defaults=False) or {}, "report": inspector.report() or {},
                    "stats": inspector.stats() or {}, "queues": inspector.active_queues() or {},
                    "scheduled": inspector.scheduled() or {}}

    try:
        answers = _step(deadline, 5 * INSPECT_TIMEOUT + 1.0, "inspect", inspect)
    except (Exception, ProbeTimeout):  # noqa: BLE001 - they answered ping; nothing else is known of them
        return [WorkerFacts(name, answered_queues=False) for name in names]
    return [worker_facts(name, answers) for name in names]


def worker_facts(name: str, answers: dict[str, Any]) -> WorkerFacts:
    """One worker's facts from the inspect answers (pure)."""
    conf = answers["conf"].get(name)
    report = answers["report"].get(name)
    celery_version, kombu_version = versions_from_report(report) if report is not None else (None, None)
    backend = backend_from_report(report.get("ok") if isinstance(report, dict) else report) if report else None
    pool = ((answers["stats"].get(name) or {}).get("pool") or {})
    timeouts = pool.get("timeouts")
    pool_timeouts = None
    if isinstance(timeouts, (list, tuple)) and len(timeouts) == 2:
        pool_timeouts = (float(timeouts[0] or 0), float(timeouts[1] or 0))
    queues = []
    for queue in answers["queues"].get(name) or []:
        if not isinstance(queue, dict):
            continue
        exchange = queue.get("exchange") or {}
        arguments = queue.get("queue_arguments") or {}
        queues.append(ConsumedQueue(
            str(queue.get("name")), exchange_type=exchange.get("type") if isinstance(exchange, dict) else None,
            queue_type=arguments.get("x-queue-type") if isinstance(arguments, dict) else None,
            broadcast=isinstance(exchange, dict) and exchange.get("type") == "fanout"))
    scheduled = answers["scheduled"].get(name)
    return WorkerFacts(
        name, conf=conf if isinstance(conf, dict) else None, celery_version=celery_version,
        kombu_version=kombu_version,
        backend=("disabled" if backend and backend.startswith("disabled") else shown(backend)) if backend else None,
        pool_timeouts=pool_timeouts, queues=queues,
        scheduled=len(scheduled) if isinstance(scheduled, list) else None,
        answered_queues=name in answers["queues"])


# ------------------------------------------------------------------------------------ Redis


def redis_facts(conn: Connection, queues: Iterable[str], visibility_timeout: float, deadline: Deadline) -> RedisFacts:
    channel: Any = conn.default_channel
    client = plain_client(channel)
    try:
        answer = _step(deadline, STEP_SOCKET_TIMEOUT, "CONFIG GET", lambda: client.config_get("maxmemory*"))
        policy: str | Unchecked = str(answer.get("maxmemory-policy", "")) or Unchecked(
            "CONFIG GET maxmemory-policy gave no value")
        maxmemory = int(answer["maxmemory"]) if str(answer.get("maxmemory", "")).isdigit() else None
    except (Exception, ProbeTimeout) as exc:  # noqa: BLE001 - any failure is a reason
        policy, maxmemory = Unchecked(f"CONFIG GET maxmemory-policy was refused or unanswered "
                                      f"(CONFIG disabled or renamed?): {_why(exc)}"), None
    found = RedisFacts(policy, maxmemory)
    try:
        _step(deadline, deadline.remaining(), "reading queued ETAs",
              lambda: _scan_etas(channel, client, list(dict.fromkeys(queues)), visibility_timeout, found))
    except (Exception, ProbeTimeout) as exc:  # noqa: BLE001 - any failure is a reason
        found.etas = Unchecked(f"reading the queues' ETAs: {_why(exc)}")
    return found


def _scan_etas(channel: Any, client: Any, queues: list[str], visibility_timeout: float, found: RedisFacts) -> None:
    """Every ETA waiting in the queues' lists and in ``unacked``, read by LRANGE/HSCAN (nothing taken)."""
    prefix = key_prefix(channel)
    now = time.time()
    etas: list[QueuedEta] = []
    budget = MAX_SCANNED
    for queue in queues:
        for _label, key in redis_queue_keys(queue, channel.sep, channel.priority_steps):
            length = int(client.llen(f"{prefix}{key}") or 0)
            start = 0
            while start < length and budget > 0:
                take = min(PAGE, budget, length - start)
                for raw in client.lrange(f"{prefix}{key}", start, start + take - 1) or []:
                    message = decode(raw)
                    eta = message_eta(message)
                    if eta is not None:
                        etas.append(QueuedEta(queue, task_name(raw), eta - now, "queue"))
                found.scanned += take
                budget -= take
                start += take
            found.truncated = found.truncated or start < length
    unacked_key = f"{prefix}{channel.unacked_key}"
    index_key = f"{prefix}{channel.unacked_index_key}"
    cursor = 0
    while budget > 0:
        cursor, page = client.hscan(unacked_key, cursor, count=PAGE)
        tags = list(page)
        scores = client.zmscore(index_key, tags) if tags else []
        for (tag, raw), score in zip(page.items(), scores):
            entry = unacked_entry(raw)
            found.scanned += 1
            budget -= 1
            if entry is None:
                continue
            message, routing_key = entry
            eta = message_eta(message)
            if eta is None:
                continue
            redelivery = float(score) + visibility_timeout - now if score is not None else None
            etas.append(QueuedEta(routing_key or "?", task_name(json.dumps(message)), eta - now, "unacked",
                                  redelivery))
        if not cursor:
            break
    found.truncated = found.truncated or (budget <= 0 and bool(cursor))
    found.etas = etas


# ------------------------------------------------------------------------------------ events


def observe_task_events(app: Celery, workers: list[WorkerFacts], deadline: Deadline,
                        has_backend: bool) -> EventsFacts | Unchecked:
    """Send one ``celery.accumulate`` per consumed queue while listening to task events."""
    from kombu import Consumer, Queue

    queues = sorted({q.name for w in workers for q in w.queues if not q.broadcast})[:MAX_EVENT_QUEUES]
    if not queues:
        return Unchecked("no answering worker consumes a queue")
    facts = EventsFacts()
    ids: dict[str, str] = {}
    seen: dict[str, set[str]] = {}

    def on_event(event: dict[str, Any]) -> None:
        queue = ids.get(str(event.get("uuid")))
        if queue and str(event.get("type", "")).startswith("task-"):
            seen.setdefault(queue, set()).add(str(event.get("hostname") or "?"))

    def on_message(message: Any) -> None:
        try:
            body = message.decode()
        except Exception:  # noqa: BLE001 - an event that cannot be read names no task of ours
            return
        # Workers buffer task events and send them in groups: a list of events in one message.
        for event in body if isinstance(body, list) else [body]:
            if isinstance(event, dict):
                on_event(event)

    def listen() -> None:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=0)
            if not events_exchange_exists(conn, app.conf.event_exchange):
                facts.missing_exchange = app.conf.event_exchange  # declaring it would leave ours behind
                return
            channel = conn.channel()
            # A plain auto-delete queue on the events exchange: the receiver's own queue has an
            # expiry, which kombu's Redis transport books in _kombu.binding_deadlines and leaves there.
            exchange = app.events.Receiver(channel).exchange
            listener = Queue(f"celeryev.doctor-{uuid.uuid4()}", exchange=exchange, routing_key="#",
                             auto_delete=True, durable=False)
            accept = sorted({"json", str(app.conf.event_serializer or "json")})
            consumers = [Consumer(channel, queues=[listener], on_message=on_message, no_ack=True, accept=accept)]
            for consumer in consumers:
                consumer.consume()
            _drain(conn, 0.1)  # subscribes (Redis fanout subscribes on the first drain)
            results = {}
            for queue in queues:
                task_id = f"celery-probe-doctor-{uuid.uuid4()}"
                ids[task_id] = queue
                facts.sent[queue] = task_id
                results[queue] = app.send_task("celery.accumulate", args=("celery-probe-doctor",), queue=queue,
                                               task_id=task_id)
            started = time.monotonic()
            window = min(EVENTS_WINDOW, max(0.2, deadline.remaining() - 1.0))
            while time.monotonic() - started < window and len(seen) < len(queues):
                _drain(conn, 0.1)
            facts.listened_s = round(time.monotonic() - started, 3)
            for queue, result in results.items():
                facts.ran[queue] = (result.state == "SUCCESS") if has_backend else None
                if has_backend:
                    _quietly(result.forget)  # a result left for its expiry is no failure
            for consumer in consumers:
                _quietly(consumer.cancel)
            _quietly(channel.close)

    try:
        _step(deadline, deadline.remaining(), "listening to task events", listen)
    except (Exception, ProbeTimeout) as exc:  # noqa: BLE001 - any failure is a reason
        return Unchecked(f"listening to task events: {_why(exc)}")
    facts.task_events_from = {queue: sorted(names) for queue, names in seen.items()}
    return facts


def _drain(conn: Connection, seconds: float) -> None:
    try:
        conn.drain_events(timeout=seconds)
    except TimeoutError:
        pass


# ------------------------------------------------------------------------------------ a review


def gather(settings: Settings, deadline: Deadline) -> Facts:
    """Every fact a review needs, within ``deadline``."""
    import celery
    import kombu

    socket_timeout = max(0.2, min(STEP_SOCKET_TIMEOUT, deadline.total / 3))
    app, app_info = load_app(settings, socket_timeout)
    broker_url = probed_broker_url(app) or ""
    transport = transport_name(broker_url) if broker_url else "unknown"
    broker = BrokerFacts(transport, redact_url(broker_url) if broker_url else "no broker")
    facts = Facts(app_info, broker, Unchecked("the broker did not answer"),
                  task_slas=[pattern for pattern, _seconds in settings.task_sla],
                  queue_slas=[queue for queue, _seconds in settings.sla],
                  probe_celery_version=celery.__version__, probe_kombu_version=kombu.__version__)
    conn = app.connection_for_write()
    try:
        try:
            _step(deadline, socket_timeout + 0.5, "connecting to the broker",
                  lambda: (conn.ensure_connection(max_retries=0), conn.default_channel))
        except (Exception, ProbeTimeout) as exc:  # noqa: BLE001 - any failure is a reason
            broker.error = _why(exc)
            facts.workers = Unchecked(f"the broker did not answer: {broker.error}")
            return facts
        facts.workers = ask_workers(app, deadline)
        if transport == "redis":
            queues = _known_queues(app_info, facts.workers)
            visibility = app_info.visibility_timeout if isinstance(app_info, AppFacts) else DEFAULT_VISIBILITY_TIMEOUT
            broker.redis = redis_facts(conn, queues, visibility, deadline)
        if facts.task_slas and isinstance(facts.workers, list) and facts.workers:
            has_backend = isinstance(app_info, AppFacts) and bool(app_info.result_backend)
            facts.events = observe_task_events(app, facts.workers, deadline, has_backend)
        elif facts.task_slas:
            facts.events = Unchecked("no worker answered ping")
    finally:
        _quietly_close(conn)
    return facts


def _known_queues(app_info: AppFacts | Unchecked, workers: list[WorkerFacts] | Unchecked) -> list[str]:
    names: list[str] = []
    if isinstance(app_info, AppFacts):
        names += [app_info.default_queue, *app_info.declared_queues, *app_info.routed_queues]
    else:
        names.append("celery")
    if isinstance(workers, list):
        names += [q.name for w in workers for q in w.queues if not q.broadcast]
    return list(dict.fromkeys(names))
