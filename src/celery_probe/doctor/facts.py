"""The evidence a review judges, as plain data: what the app is configured with, what the broker
and the workers said. :mod:`.gather` fills it in; :mod:`.rules` reads it. A fact that could not be
learnt is :class:`Unchecked` with the reason, so the check that needs it says "not checked", never
"fine".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Unchecked:
    """A fact that could not be learnt, and why (one line, credentials masked)."""

    reason: str


@dataclass
class TaskLimit:
    """One registered task's effective limits (the task's own, its annotation, or the app's)."""

    name: str
    time_limit: float | None = None
    soft_time_limit: float | None = None


@dataclass
class AppFacts:
    """The app's own configuration (``-A``), read before any bound is applied to it."""

    path: str
    celery_version: str
    kombu_version: str
    set_keys: frozenset[str] = frozenset()  # settings the app sets itself (not defaults)
    time_limit: float | None = None
    soft_time_limit: float | None = None
    acks_late: bool = False
    visibility_timeout: float = 3600.0
    visibility_timeout_set: bool = False
    result_backend: str | None = None  # masked; None when there is none
    tasks: list[TaskLimit] = field(default_factory=list)  # the app's own tasks, celery.* left out
    declared_queues: list[str] = field(default_factory=list)  # task_queues
    routed_queues: list[str] = field(default_factory=list)  # task_routes
    default_queue: str = "celery"
    unlisted_routers: list[str] = field(default_factory=list)
    quorum_queues: dict[str, str] = field(default_factory=dict)  # quorum queue -> its exchange type
    send_task_events: bool = False


@dataclass
class QueuedEta:
    """A message waiting for its countdown/ETA, found in a queue list or in ``unacked``."""

    queue: str
    task: str
    eta_in: float  # seconds from now until its ETA
    where: str  # "queue" or "unacked"
    redelivery_in: float | None = None  # unacked: seconds until Redis gives it to another worker


@dataclass
class RedisFacts:
    """What a Redis broker said: its eviction policy and the ETA messages it holds."""

    maxmemory_policy: str | Unchecked
    maxmemory: int | None = None
    etas: list[QueuedEta] | Unchecked = field(default_factory=list)
    scanned: int = 0  # messages read for their ETA
    truncated: bool = False  # more messages than were read


@dataclass
class BrokerFacts:
    """The broker: its kind, its masked URL, and whether it answered."""

    transport: str
    url: str
    error: str | None = None  # why it could not be reached; None when it answered
    redis: RedisFacts | None = None

    @property
    def reachable(self) -> bool:
        return self.error is None


@dataclass
class ConsumedQueue:
    """One queue a worker consumes, as its ``active_queues`` answer describes it."""

    name: str
    exchange_type: str | None = None
    queue_type: str | None = None  # x-queue-type: quorum, classic, stream…
    broadcast: bool = False


@dataclass
class WorkerFacts:
    """One worker that answered, and what its remote-control answers said."""

    name: str
    conf: dict[str, Any] | None = None  # inspect conf without defaults: the settings it sets
    celery_version: str | None = None
    kombu_version: str | None = None
    backend: str | None = None  # from inspect report (``results:``), masked; "disabled" for none
    pool_timeouts: tuple[float, float] | None = None  # (soft, hard) as inspect stats reports them; 0 = none
    queues: list[ConsumedQueue] = field(default_factory=list)
    scheduled: int | None = None  # countdown/ETA tasks it holds
    answered_queues: bool = True  # False: it answered ping but not active_queues (its queues are unknown)

    def setting(self, key: str, default: Any = None) -> Any:
        return (self.conf or {}).get(key, default)

    def sets(self, key: str) -> bool:
        return self.conf is not None and key in self.conf


@dataclass
class EventsFacts:
    """Whether the workers send task events, from tasks sent while listening to the events."""

    sent: dict[str, str] = field(default_factory=dict)  # queue -> id of the no-op task sent to it
    ran: dict[str, bool | None] = field(default_factory=dict)  # queue -> its result came back (None: no backend)
    task_events_from: dict[str, list[str]] = field(default_factory=dict)  # queue -> workers whose events named it
    listened_s: float = 0.0
    missing_exchange: str | None = None  # RabbitMQ: the events exchange does not exist, so no worker sends events


@dataclass
class Facts:
    """Everything one review learnt."""

    app: AppFacts | Unchecked
    broker: BrokerFacts
    workers: list[WorkerFacts] | Unchecked
    task_slas: list[str] = field(default_factory=list)  # the task-sla patterns configured for celery-probe
    queue_slas: list[str] = field(default_factory=list)  # the round-trip sla queues
    events: EventsFacts | Unchecked | None = None  # None: not needed (no task SLA)
    probe_celery_version: str = ""
    probe_kombu_version: str = ""
