"""The state of one probe run, shared by every probe through session fixtures.

Each measurement is taken once, on first use, and remembered together with its failure.
That is how a probe that cannot succeed because of something already known (the broker
did not answer, no worker answered ping) fails at once with that reason instead of
waiting out the deadline a second time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from celery_probe.errors import describe_error
from celery_probe.probing.backlog import Backlog, sample_backlog
from celery_probe.probing.beat import BeatState, read_beat
from celery_probe.probing.broker import (
    BackendCheck,
    BrokerCheck,
    DelayedBacklog,
    QueueDepth,
    check_backend,
    check_broker,
    measure_delayed,
    measure_queues,
    open_connection,
)
from celery_probe.probing.deadline import Deadline, ProbeTimeout, Starved, alarm
from celery_probe.probing.events import listen_heartbeats
from celery_probe.probing.roundtrip import (
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
from celery_probe.config.settings import Settings
from celery_probe.probing.signed import REFUSE_CODE, prober_signs, refusal_message
from celery_probe.config.urls import redact_url, secrets_in
from celery_probe.verdict.mapper import STARVED_CODE
from celery_probe.probing.watchlist import WatchList, configured_watch_list, consumed_queues
from celery_probe.probing.worker_config import (
    WorkerConfig,
    inspect_config,
    prefetch_full,
    relative_file,
    resolved,
    same_backend,
    shown,
)
from celery_probe.probing.workers import (
    PingResult,
    WorkerActivity,
    ask_workers,
    pidbox_bindings,
    reask_queues,
)

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Connection

T = TypeVar("T")
CONNECT_SHARE = 0.4  # of the deadline, for the broker or the backend to answer a connection
EVALUATION_RESERVE = 0.25  # seconds kept back from the round-trip wait for the probes after it
EXPLAIN_RESERVE = 0.1  # of that, seconds left to the probes after asking the workers why a trip failed
REASK_AFTER = 0.3  # seconds before asking a worker that named no queue once more
HEARTBEAT_WAIT = 2.3  # seconds to wait for a silent worker's heartbeat (sent every 2 s by default)


class KnownFailure(Exception):
    """A measurement this probe depends on already failed; the message says why."""


class NoEvidence(Exception):
    """A measurement that proves nothing either way about Celery, with its own reason code.

    Raised as is to the probe that asked first, like :class:`~celery_probe.probing.deadline.Starved`
    (whose code is ``celery_probe_starved``): the verdict is ``unknown``, never ``down``.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class UnknownFailure(KnownFailure):
    """A measurement this probe depends on proved nothing (:class:`NoEvidence`, ``code`` says why).

    Its consequences are no evidence either: they too make the verdict ``unknown``.
    """

    def __init__(self, message: str, code: str = STARVED_CODE) -> None:
        super().__init__(message)
        self.code = code


class StarvedFailure(UnknownFailure):
    """A measurement this probe depends on was starved (see :class:`~celery_probe.probing.deadline.Starved`)."""


class MeasurementFailed(KnownFailure):
    """The measurement failed in this very call: a root cause, not a consequence of one.

    The probe that first asks for a measurement and sees it fail (the broker connection
    dropped during ping, say) reports the error as its own; only the probes that ask
    again later fail with "not attempted". Otherwise a verdict could consist of
    consequences alone, with the cause shown nowhere.
    """


def watched_queues(settings: Settings, app: Celery) -> list[str]:
    """The queues watched before any worker answered (see :mod:`celery_probe.probing.watchlist`)."""
    return configured_watch_list(app.conf, settings.queues, guess_default=not settings.app).names


class Measurements:
    """Lazily measured facts about one target, each with the reason it could not be had."""

    def __init__(self, settings: Settings, app: Celery, deadline: Deadline) -> None:
        self.settings = settings
        self.app = app
        self.deadline = deadline
        self.watch: WatchList = configured_watch_list(app.conf, settings.queues, guess_default=not settings.app)
        self.queues = self.watch.names  # grows once, by the queues the workers consume
        self._rotation_key = " ".join(self.queues)  # the configured part: stable across runs
        self._watch_settled = bool(settings.queues)  # -Q is the whole list
        self.secrets = secrets_in(
            [settings.broker, settings.backend, app.conf.broker_url, _backend_url(app)]
        )
        self.broker_url = redact_url(str(app.conf.broker_url or settings.broker or ""))
        # A relative sqlite backend file is opened relative to the working directory; whether
        # it exists here before the run tells whether anybody writes results where we read.
        self.result_file = relative_file(_backend_url(app))
        self.result_file_existed = self.result_file is not None and resolved(self.result_file).exists()
        self.backend_url = redact_url(_backend_url(app) or "")  # shown where the backend fails
        self._conn: Connection | None = None
        self._activity_answers: WorkerActivity | None = None  # answered in the ping's round
        self._cache: dict[str, Any] = {}
        self.rotation: dict[str, int] | None = None  # set when round trips take turns
        self._errors: dict[str, str] = {}
        self._unknown: dict[str, str] = {}  # keys whose failure proves nothing: their reason code

    # -- memoisation with remembered failures ------------------------------------------

    def _once(self, key: str, compute: Callable[[], T]) -> T:
        if key in self._errors:
            code = self._unknown.get(key)
            if code is None:
                raise KnownFailure(self._errors[key])
            raise StarvedFailure(self._errors[key]) if code == STARVED_CODE else UnknownFailure(self._errors[key], code)
        if key not in self._cache:
            try:
                self._cache[key] = compute()
            except (Starved, NoEvidence) as exc:  # raised as is to the probe that asked first
                self._errors[key] = str(exc)
                self._unknown[key] = getattr(exc, "code", STARVED_CODE)
                raise
            except KnownFailure as exc:
                self._errors[key] = str(exc)
                if isinstance(exc, UnknownFailure):
                    self._unknown[key] = exc.code
                raise
            except ProbeTimeout as exc:
                if not exc.cut_short:  # cut by a probe's own timeout: the next probe measures again
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
            with self.deadline.wait("the broker connection") as waited:
                try:
                    with alarm(budget, "the broker connection"):
                        check = check_broker(self._conn)
                except ProbeTimeout as exc:
                    if exc.cut_short:  # a probe's own timeout ended first: no verdict on the broker
                        raise
                    check = BrokerCheck(False, "unknown", error=f"no answer within {budget:.2f}s", timed_out=True)
            if check.timed_out and not waited.fair():
                raise waited.starved()
            return check

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
            with self.deadline.wait("the result backend connection") as waited:
                try:
                    with alarm(budget, "the result backend connection"):
                        check = check_backend(self.app)
                except ProbeTimeout as exc:
                    if exc.cut_short:  # a probe's own timeout ended first: no verdict on the backend
                        raise
                    name = type(self.app.backend).__name__
                    check = BackendCheck(True, name, reachable=False, error=f"no answer within {budget:.2f}s",
                                         timed_out=True)
            if check.timed_out and not waited.fair():
                raise waited.starved()
            return check

        return self._once("backend", compute)

    # -- workers ---------------------------------------------------------------------------

    def ping(self) -> PingResult:
        def compute() -> PingResult:
            self.require_broker()
            with self.deadline.wait("the ping") as waited:
                # What the workers are doing is asked in the same round: one round, not six.
                result, self._activity_answers = ask_workers(
                    self.app,
                    window=self.settings.ping_window,
                    expect=self.settings.expect_workers,
                    budget=self.deadline.remaining(),
                    patience=self._inspect_patience(),
                )
            # Silence is evidence only after a whole idle window of listening (or the fair
            # wait, if that is shorter): a reply may still have been on its way.
            needed = min(self.settings.ping_window, self.deadline.fair_wait())
            if not result.replies and not waited.fair(needed):
                raise waited.starved(needed)
            return result

        return self._once("ping", compute)

    def require_workers(self) -> list[str]:
        names = self.ping().names
        if not names:
            self.refusal()  # alive workers that refuse the probe's messages: unknown, not down
            raise KnownFailure(
                f"no worker answered ping within {self.settings.ping_window:.2f}s idle window"
            )
        return names

    def refusal(self) -> None:
        """Raise :class:`NoEvidence` when the workers that stayed silent are alive and refuse us.

        Asked only after a ping nobody answered. Workers that sign their messages
        (:mod:`celery_probe.probing.signed`) refuse an unsigned ping; their signed heartbeats show
        they live. No heartbeat within the wait (a dead or frozen worker, or one started
        ``--without-heartbeat``), or any trouble listening: nothing changes, the silence
        of the ping stands as the evidence it was.
        """

        def compute() -> None:
            # With -A the probe speaks the app's own serializer, as its workers do: only a
            # bare broker URL (-b) can meet workers that refuse what it sends.
            if self.settings.app or prober_signs(self.app.conf) or self.deadline.remaining() <= EVALUATION_RESERVE:
                return
            try:
                bound = pidbox_bindings(self.require_broker(), self.app.conf.control_exchange)
                if bound == []:
                    return  # on Redis no worker listens at all: no heartbeat to wait for
                seconds = self.deadline.within(HEARTBEAT_WAIT) - EVALUATION_RESERVE
                with alarm(seconds + 0.5, "listening for worker heartbeats"):
                    heartbeats = listen_heartbeats(self.app, max(0.05, seconds))
            except (Exception, ProbeTimeout):  # noqa: BLE001 - no evidence of life: the ping stands
                return
            message = refusal_message(heartbeats)
            if message:
                raise NoEvidence(message, REFUSE_CODE)

        self._once("refusal", compute)

    def activity(self) -> WorkerActivity:
        def compute() -> WorkerActivity:
            names = self.require_workers()
            timeout = self._inspect_patience()
            activity = self._activity_answers
            assert activity is not None  # asked with the ping
            idle = [name for name in names if not activity.queues.get(name)]
            if idle and self.deadline.remaining() > REASK_AFTER + 1.0:
                time.sleep(REASK_AFTER)  # a consumer that is (re)starting names its queues soon
                reask_queues(self.app, activity, idle, timeout=self.deadline.within(timeout))
            return activity

        return self._once("activity", compute)

    def _inspect_patience(self) -> float:
        """How long a worker that answered ping may take over each of the other answers."""
        return max(0.01, self.deadline.within(max(self.settings.ping_window, 1.0)))

    # -- queues ------------------------------------------------------------------------------

    def settle_watch_list(self) -> list[str]:
        """Add the queues the answering workers consume, once, before any queue is measured.

        The broker and ping come first, so what workers consume is known only then. The
        list is settled at the first queue measurement and not changed afterwards: the
        depths, consumers and round trips of one run all speak of the same queues. When
        no worker answered, the configured list stands alone.
        """
        if not self._watch_settled:
            self._watch_settled = True
            try:
                activity = self.activity()
            except KnownFailure:
                return self.queues
            consumed = {
                name: [q for q in queues if q not in activity.broadcast]
                for name, queues in activity.queues.items()
            }
            self.watch.consumed_added = self.watch.add(consumed_queues(consumed))
            self.watch.settle_guess(consumed_queues(consumed))
        return self.queues

    def queue_depths(self) -> dict[str, QueueDepth]:
        return self._once(
            "queues", lambda: measure_queues(self.require_broker(), self.settle_watch_list())
        )

    def consumers(self) -> dict[str, list[str]]:
        """Workers consuming each watched queue (empty lists when no worker answered)."""
        self.settle_watch_list()
        try:
            activity = self.activity()
        except UnknownFailure:
            raise  # who consumes is unknown, not "nobody"
        except KnownFailure:
            return {queue: [] for queue in self.queues}
        return {queue: activity.consumers_of(queue) for queue in self.queues}

    def delayed(self) -> DelayedBacklog | None:
        """Messages in RabbitMQ's native delayed delivery queues (None: the broker has none)."""
        return self._once("delayed", lambda: measure_delayed(self.require_broker()))

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
                connection=self.require_broker(),
            )
            self._cache["sent"] = trips
            # Stop waiting a little before the deadline: the probes that judge these
            # trips (failed, saturated, slow) still need a moment to run.
            wait = max(0.05, self.deadline.remaining() - EVALUATION_RESERVE)
            with self.deadline.wait("the round trip") as waited:
                collect_trips(trips, self.deadline, wait=wait, gate=self._result_file_gate())
            for trip in trips:
                if trip.timed_out and not waited.fair():
                    trip.starved = str(waited.starved())
                elif not trip.ok:
                    trip.saturated = self._saturation(trip.queue)
            self._explain_unreturned([t for t in trips if _unreturned(t)])
            consumed = set(reachable)
            for queue in self.queues:
                if queue not in consumed and queue in self.watch.required:
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
        path = cursor_path(self.settings.report_dir, f"{self.broker_url} {self._rotation_key}")
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

    def _result_file_gate(self) -> Callable[[], bool] | None:
        """While a relative sqlite file that did not exist is still missing, do not read it.

        Reading would create it here (litter in cron's home directory), and its absence is
        the evidence that the workers write their results in a directory of their own.
        """
        if self.result_file is None or self.result_file_existed:
            return None
        path = resolved(self.result_file)
        return path.exists

    def _explain_unreturned(self, trips: list[Trip]) -> None:
        """Say why round trips that a free consumer should have taken did not come back.

        Asked only now, so a healthy run pays nothing: a worker whose prefetch is held by
        countdown or reserved tasks stalled (still a failure, now with its cause); a worker
        that stores results in another backend than this probe reads, or none, may well
        have run the task: the round trip is unconfirmed, not failed.
        """
        if not trips:
            return
        if self.result_file is not None and not resolved(self.result_file).exists():
            where = resolved(self.result_file)
            for trip in trips:
                trip.unconfirmed = (
                    f"the result backend {shown(_backend_url(self.app))} is a path relative to the "
                    f"working directory and {where} does not exist: the workers write their results in "
                    "the directory they run in; give every process an absolute path "
                    "(db+sqlite:////abs/path.sqlite) or run the probe from the workers' directory"
                )
            return
        try:
            activity = self.activity()
        except KnownFailure:
            return
        consumers = sorted({name for trip in trips for name in activity.consumers_of(trip.queue)})
        configs = self._worker_configs(consumers)
        for trip in trips:
            self._explain_one(trip, activity, configs)

    def _worker_configs(self, workers: list[str]) -> dict[str, WorkerConfig]:
        """The workers' own settings, within what is left of the deadline; {} when unanswered."""
        budget = self.deadline.remaining() - EXPLAIN_RESERVE
        if not workers or budget < 0.05:
            return {}
        try:
            with alarm(budget, "asking the workers for their configuration"):
                return inspect_config(self.app, workers, timeout=budget)
        except (Exception, ProbeTimeout):
            return {}

    def _explain_one(self, trip: Trip, activity: WorkerActivity, configs: dict[str, WorkerConfig]) -> None:
        consumers = activity.consumers_of(trip.queue)
        stalls = [
            why for name in consumers if name in configs
            for why in [prefetch_full(
                name, configs[name],
                reserved=activity.reserved.get(name, 0), scheduled=activity.scheduled.get(name, 0),
                active=activity.active.get(name, 0), concurrency=activity.concurrency.get(name),
                reported=activity.prefetch.get(name),
            )] if why
        ]
        if stalls:
            trip.error = f"{trip.error}: " + "; ".join(stalls)
            return
        probe_backend = _backend_url(self.app)
        answered = [name for name in consumers if configs.get(name) and configs[name].backend]
        elsewhere = [name for name in answered if not same_backend(configs[name].backend, probe_backend)]
        if answered and len(elsewhere) == len(answered):
            stores = sorted({shown(configs[name].backend) for name in elsewhere})
            one = len(elsewhere) == 1
            verb = ("runs" if one else "run") + " without a result backend" if stores == ["no result backend"] else (
                ("stores its" if one else "store their") + " results in " + " and ".join(stores))
            trip.unconfirmed = (
                f"{', '.join(elsewhere)} {verb}, but this probe reads {shown(probe_backend)}: "
                "the result cannot come back here (probe with the workers' own backend: "
                "leave out --backend, or give theirs)"
            )
        elif self.result_file is not None:
            trip.error = (
                f"{trip.error} (the result backend {shown(probe_backend)} is relative to the working "
                f"directory: this probe read {resolved(self.result_file)})"
            )

    # -- cleanup -------------------------------------------------------------------------------

    def close(self) -> None:
        """Forget stored results and close the connection; never raise, never block long."""
        gate = self._result_file_gate()
        if gate is None or gate():  # forgetting would create a missing sqlite file
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


def _unreturned(trip: Trip) -> bool:
    """Sent, no result in time, and not explained by busy consumers."""
    return trip.result is not None and trip.latency_ms is None and trip.saturated is None and (
        trip.starved is None and (trip.error or "").startswith("no result within"))


def _backend_url(app: Celery) -> str | None:
    value = app.conf.result_backend
    return value if isinstance(value, str) else None
