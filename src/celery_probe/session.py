"""The state of one probe run, shared by every probe through session fixtures.

Each measurement is taken once, on first use, and remembered together with its failure.
That is how a probe that cannot succeed because of something already known (the broker
did not answer, no worker answered ping) fails at once with that reason instead of
waiting out the deadline a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from celery_probe.backlog import Backlog, sample_backlog
from celery_probe.beat import BeatState, read_beat
from celery_probe.broker import (
    BackendCheck,
    BrokerCheck,
    QueueDepth,
    check_backend,
    check_broker,
    describe_error,
    measure_queues,
    open_connection,
)
from celery_probe.deadline import Deadline, ProbeTimeout, alarm
from celery_probe.roundtrip import (
    Trip,
    collect_trips,
    cursor_path,
    forget_trips,
    has_result_backend,
    read_cursor,
    rotate,
    send_trips,
    write_cursor,
)
from celery_probe.settings import Settings
from celery_probe.urls import redact_url, secrets_in
from celery_probe.workers import PingResult, WorkerActivity, inspect_activity, ping_workers

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Connection

T = TypeVar("T")
CONNECT_SHARE = 0.4  # of the deadline, for the broker or the backend to answer a connection
EVALUATION_RESERVE = 0.25  # seconds kept back from the round-trip wait for the probes after it


class KnownFailure(Exception):
    """A measurement this probe depends on already failed; the message says why."""


class MeasurementFailed(KnownFailure):
    """The measurement failed in this very call: a root cause, not a consequence of one.

    The probe that first asks for a measurement and sees it fail (the broker connection
    dropped during ping, say) reports the error as its own; only the probes that ask
    again later fail with "not attempted". Otherwise a verdict could consist of
    consequences alone, with the cause shown nowhere.
    """


def watched_queues(settings: Settings, app: Celery) -> list[str]:
    """``-Q`` queues, else the app's ``task_queues``, else its default queue."""
    if settings.queues:
        return list(settings.queues)
    configured = app.conf.task_queues
    if configured:
        names = [getattr(q, "name", None) or str(q) for q in configured]
        return list(dict.fromkeys(n for n in names if n))
    return [app.conf.task_default_queue or "celery"]


class ProbeRun:
    """Lazily measured facts about one target, each with the reason it could not be had."""

    def __init__(self, settings: Settings, app: Celery, deadline: Deadline) -> None:
        self.settings = settings
        self.app = app
        self.deadline = deadline
        self.queues = watched_queues(settings, app)
        self.secrets = secrets_in(
            [settings.broker, settings.backend, app.conf.broker_url, _backend_url(app)]
        )
        self.broker_url = redact_url(str(app.conf.broker_url or settings.broker or ""))
        self.backend_url = redact_url(_backend_url(app) or "")  # shown where the backend fails
        self._conn: Connection | None = None
        self._cache: dict[str, Any] = {}
        self.rotation: dict[str, int] | None = None  # set when round trips take turns
        self._errors: dict[str, str] = {}

    # -- memoisation with remembered failures ------------------------------------------

    def _once(self, key: str, compute: Callable[[], T]) -> T:
        if key in self._errors:
            raise KnownFailure(self._errors[key])
        if key not in self._cache:
            try:
                self._cache[key] = compute()
            except KnownFailure as exc:
                self._errors[key] = str(exc)
                raise
            except ProbeTimeout as exc:
                self._errors[key] = f"timed out: {exc}"
                raise
            except Exception as exc:
                self._errors[key] = describe_error(exc)
                raise MeasurementFailed(self._errors[key]) from None
        return self._cache[key]  # type: ignore[no-any-return]

    # -- broker and backend --------------------------------------------------------------

    def broker(self) -> BrokerCheck:
        def compute() -> BrokerCheck:
            self._conn = open_connection(self.app)
            budget = self._connect_budget()
            try:
                with alarm(budget, "the broker connection"):
                    return check_broker(self._conn)
            except ProbeTimeout:
                return BrokerCheck(False, "unknown", error=f"no answer within {budget:.2f}s")

        return self._once("broker", compute)

    def _connect_budget(self) -> float:
        """How long a connection may take before the service counts as not answering.

        A share of the deadline, not all of it: the probes that depend on the answer then
        fail at once with that reason, instead of every one saying "deadline used up".
        """
        return self.deadline.within(max(0.5, self.deadline.total * CONNECT_SHARE))

    def require_broker(self) -> Connection:
        check = self.broker()
        if not check.reachable:
            raise KnownFailure(f"broker {self.broker_url} did not answer: {check.error}")
        assert self._conn is not None
        return self._conn

    def backend(self) -> BackendCheck:
        def compute() -> BackendCheck:
            budget = self._connect_budget()
            try:
                with alarm(budget, "the result backend connection"):
                    return check_backend(self.app)
            except ProbeTimeout:
                name = type(self.app.backend).__name__
                return BackendCheck(True, name, reachable=False, error=f"no answer within {budget:.2f}s")

        return self._once("backend", compute)

    # -- workers ---------------------------------------------------------------------------

    def ping(self) -> PingResult:
        def compute() -> PingResult:
            self.require_broker()
            return ping_workers(
                self.app,
                window=self.settings.ping_window,
                expect=self.settings.expect_workers,
                budget=self.deadline.remaining(),
            )

        return self._once("ping", compute)

    def require_workers(self) -> list[str]:
        names = self.ping().names
        if not names:
            raise KnownFailure(
                f"no worker answered ping within {self.settings.ping_window:.2f}s idle window"
            )
        return names

    def activity(self) -> WorkerActivity:
        def compute() -> WorkerActivity:
            names = self.require_workers()
            timeout = max(0.01, self.deadline.within(max(self.settings.ping_window, 1.0)))
            return inspect_activity(self.app, names, timeout=timeout)

        return self._once("activity", compute)

    # -- queues ------------------------------------------------------------------------------

    def queue_depths(self) -> dict[str, QueueDepth]:
        return self._once("queues", lambda: measure_queues(self.require_broker(), self.queues))

    def consumers(self) -> dict[str, list[str]]:
        """Workers consuming each watched queue (empty lists when no worker answered)."""
        try:
            activity = self.activity()
        except KnownFailure:
            return {queue: [] for queue in self.queues}
        return {queue: activity.consumers_of(queue) for queue in self.queues}

    def backlog(self) -> Backlog:
        """Task names in the head of each watched queue (a bounded sample, Redis only)."""
        return self._once(
            "backlog",
            lambda: sample_backlog(self.require_broker(), self.queue_depths(), self.settings.backlog_sample),
        )

    # -- beat --------------------------------------------------------------------------------

    def beat(self) -> BeatState:
        """The last beat tick (and redbeat's keys), read against the store's own clock."""
        return self._once(
            "beat",
            lambda: read_beat(
                self.app, self.require_broker(), self.settings.beat_key,
                timeout=self.deadline.within(max(0.5, self.deadline.total * CONNECT_SHARE)),
            ),
        )

    # -- round trip ------------------------------------------------------------------------

    def has_backend(self) -> bool:
        return has_result_backend(self.app)

    def trips(self) -> list[Trip]:
        def compute() -> list[Trip]:
            self.require_workers()
            backend = self.backend()
            if backend.reachable is False:
                raise KnownFailure(f"result backend {backend.backend} {self.backend_url} did not answer: {backend.error}")
            consumers = self.consumers()
            reachable = [q for q in self.queues if consumers.get(q)]
            chosen = self._rotation(reachable)
            trips = send_trips(
                self.app,
                self.settings.roundtrip_task,
                chosen,
                expires=max(1.0, self.settings.deadline),
            )
            self._cache["sent"] = trips
            # Stop waiting a little before the deadline: the probes that judge these
            # trips (failed, saturated, slow) still need a moment to run.
            wait = max(0.05, self.deadline.remaining() - EVALUATION_RESERVE)
            collect_trips(trips, self.deadline, wait=wait)
            for trip in trips:
                if not trip.ok:
                    trip.saturated = self._saturation(trip.queue)
            consumed = set(reachable)
            for queue in self.queues:
                if queue not in consumed:
                    trips.append(Trip(queue, "", 0.0, error="no worker consumes this queue; nothing sent"))
            position = {queue: i for i, queue in enumerate(self.queues)}
            return sorted(trips, key=lambda t: position[t.queue])

        return self._once("trips", compute)

    def sent_task_ids(self) -> frozenset[str]:
        """Ids of the round-trip tasks this run published (not the deployment's own work)."""
        return frozenset(t.result.id for t in self._cache.get("sent", []) if t.result is not None)

    def _rotation(self, reachable: list[str]) -> list[str]:
        """At most ``roundtrip_max_queues`` round trips a run; more queues take turns."""
        limit = self.settings.roundtrip_max_queues
        if limit <= 0 or len(reachable) <= limit:
            self.rotation = None
            return reachable
        path = cursor_path(self.settings.report_dir, f"{self.broker_url} {' '.join(self.queues)}")
        chosen, following = rotate(reachable, limit, read_cursor(path))
        write_cursor(path, following)
        self.rotation = {"sent": len(chosen), "consumed": len(reachable),
                         "runs_to_cover_all": -(-len(reachable) // limit)}
        return chosen

    def _saturation(self, queue: str) -> str | None:
        """Why ``queue`` could not take a new task in time, if its consumers were all busy.

        A failed round trip behind a full pool or a backlog means work flows, slowly
        (degraded); a failed round trip with a free consumer means work does not flow
        (down).
        """
        try:
            activity = self.activity()
        except KnownFailure:
            return None
        consumers = activity.consumers_of(queue)
        busy = [
            f"{name} {activity.active.get(name, 0)}/{activity.concurrency[name]} busy"
            for name in consumers
            if name in activity.concurrency and activity.active.get(name, 0) >= activity.concurrency[name]
        ]
        depth = self._cache.get("queues", {}).get(queue)
        backlog = depth is not None and depth.length >= self.settings.threshold_for(queue)
        if consumers and len(busy) == len(consumers):
            return "every consumer is busy: " + ", ".join(busy)
        if backlog:
            return f"{depth.length} messages wait ahead of it"
        return None

    # -- cleanup -------------------------------------------------------------------------------

    def close(self) -> None:
        """Forget stored results and close the connection; never raise, never block long."""
        forget_trips(self._cache.get("sent", []))
        self._delete_rpc_reply_queue()
        if self._conn is not None:
            try:
                self._conn.release()
            except Exception:
                pass


    def _delete_rpc_reply_queue(self) -> None:
        """The rpc:// backend's reply queue outlives the process for a day: remove it.

        RabbitMQ auto-deletes it only after a consumer has cancelled, and results are read
        here by polling, so every run would otherwise leave one queue behind.
        """
        if "sent" not in self._cache or type(self.app.backend).__name__ != "RPCBackend":
            return
        try:
            name = self.app.backend.binding.name
            with self.app.connection_for_write() as conn:
                conn.default_channel.queue_delete(name)
        except Exception:
            pass


def _backend_url(app: Celery) -> str | None:
    value = app.conf.result_backend
    return value if isinstance(value, str) else None
