"""The consumer bootstep that keeps a worker's ``liveness.json`` and ``readiness.json``.

Who writes, and why that proves anything:

- A timer entry on the consumer's timer asks every ``interval`` seconds, and the answer is
  written by :meth:`Consumer.call_soon`, i.e. *by the consumer's loop itself*: the hub's next
  iteration for prefork, solo and threads (``asynloop``), the next pass of ``synloop`` for
  gevent and eventlet (and for transports without an event loop, whose timer is a thread).
  A thread that merely writes proves only that a thread runs; here a loop that stops turning
  stops the writes, whatever the timer does.
- Celery connects and reconnects to the broker in the main thread, outside the loop
  (``Consumer.start`` retries with sleeps). When the consumer stops for that (this step's
  ``stop`` while the blueprint still runs) the step writes ``state: connecting`` and
  not-ready; ``worker-check --liveness`` accepts that state, because restarting a worker
  does not bring its broker back.
- The solo pool runs each task inside its one loop, which then cannot write. Its
  ``task_prerun`` writes ``busy`` (task, id, start) and ``task_postrun`` clears it;
  ``worker-check`` accepts a busy worker up to ``--max-busy``.
- Readiness: connected (this step started and has not stopped), every queue the worker
  started with is consumed (``task_consumer.consuming_from``, so ``cancel_consumer`` and
  ``add_consumer`` show at the next write), and the broker answered a round trip of
  :class:`~celery_probe.worker.broker_check.BrokerCheck` recently.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from celery import bootsteps, signals
from celery.utils.log import get_logger

from celery_probe.worker.broker_check import BrokerCheck
from celery_probe.worker.evidence import (
    CONNECTING,
    DEFAULT_INTERVAL,
    DIR_ENV,
    FILES,
    INTERVAL_ENV,
    LIVENESS,
    READINESS,
    RUNNING,
    STOPPING,
    busy_record,
    liveness_record,
    readiness_problem,
    readiness_record,
)
from celery_probe.worker.files import write_json
from celery_probe.worker.proc import process_start

# Celery's get_logger parents it under the "celery" logger, which the worker configures (its
# --logfile, its level) whether or not it hijacks the root logger.
logger = get_logger("celery_probe.worker")

POOL_NAMES = {"prefork": "prefork", "solo": "solo", "thread": "threads", "gevent": "gevent",
              "eventlet": "eventlet"}


def pool_name(pool: Any) -> str:
    module = type(pool).__module__
    return POOL_NAMES.get(module.rpartition(".")[2], module)


def resolve_folder(option: str | None, given: str | None, environ: Mapping[str, str]) -> str | None:
    """The evidence folder: ``--probe-dir``, else ``install(probe_dir=...)``, else ``CELERY_PROBE_WORKER_DIR``."""
    for value in (option, given, environ.get(DIR_ENV)):
        if value and value.strip():
            return value
    return None


def resolve_interval(given: float | None, environ: Mapping[str, str]) -> float:
    """The writing interval: ``install(interval=...)``, else ``CELERY_PROBE_WORKER_INTERVAL``, else 5 s."""
    if given is not None:
        value, where = float(given), "install(interval=...)"
    elif environ.get(INTERVAL_ENV):
        where = INTERVAL_ENV
        try:
            value = float(environ[INTERVAL_ENV])
        except ValueError:
            raise ValueError(f"{INTERVAL_ENV}={environ[INTERVAL_ENV]!r} is not a number of seconds") from None
    else:
        return DEFAULT_INTERVAL
    if not 0 < value <= 3600:
        raise ValueError(f"worker health interval {value!r} (from {where}) must be between 0 and 3600 seconds")
    return value


def warn_unbounded_redis(app: Any) -> None:
    """One warning when a Redis broker has no socket timeout: a frozen broker then holds the
    worker's loop inside kombu's own periodic Redis calls, and liveness goes stale with it."""
    try:
        driver = app.connection_for_read().transport.driver_type
    except Exception:  # noqa: BLE001 - an unknown transport: nothing to advise
        return
    options = app.conf.broker_transport_options or {}
    if driver == "redis" and not options.get("socket_timeout"):
        logger.warning("celery-probe worker health: broker_transport_options has no socket_timeout; "
                       "a frozen Redis would stall this worker's loop (and its liveness) until it "
                       "answers again. Set e.g. {'socket_timeout': 10, 'socket_connect_timeout': 5}.")


class WorkerHealthStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Keeps the evidence files (see the module docstring); one per worker process."""

    label = "celery-probe worker health"
    requires = ("celery.worker.consumer.tasks:Tasks",)
    default_dir: ClassVar[str | None] = None
    default_interval: ClassVar[float | None] = None

    def __init__(self, c: Any, probe_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(c, **kwargs)
        self.consumer = c
        raw = resolve_folder(probe_dir, self.default_dir, os.environ)
        self.folder: Path | None = None
        # Said at the first start, after the banner, where an operator reads the log.
        self.announce: tuple[Any, ...] | None = (
            logger.warning, ("celery-probe worker health is off: give --probe-dir DIR, "
                             "install(app, probe_dir=...) or %s"), DIR_ENV)
        if raw is None:
            return
        self.interval = resolve_interval(self.default_interval, os.environ)
        folder = Path(raw).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.announce = (logger.error, "celery-probe worker health is off: cannot create %s: %s", folder, exc)
            return
        self.folder = folder
        self.worker = str(c.hostname)
        self.pid = os.getpid()
        self.pid_start = process_start()
        self.pool = pool_name(c.pool)
        self.loop_thread = threading.get_ident()
        now = time.time()
        self.state, self.state_since = CONNECTING, now
        self.connected = False
        self.connected_at: float | None = None
        self.lost_reason: str | None = "starting: not connected to the broker yet"
        self.expected: list[str] | None = None
        self.seen: set[str] = set()
        self.not_ready_since: float | None = now
        self.busy: dict[str, Any] | None = None
        self.queued = False
        self.write_failing = False
        self.broker = BrokerCheck(c.app, self.interval, timeout=min(max(self.interval, 1.0), 5.0))
        self.write(now)
        warn_unbounded_redis(c.app)
        c.timer.call_repeatedly(self.interval, self.tick)
        if self.pool == "solo":
            signals.task_prerun.connect(self.on_task_start, weak=False)
            signals.task_postrun.connect(self.on_task_end, weak=False)
        self.announce = (logger.info, "celery-probe worker health: writing %s every %gs", folder, self.interval)

    # ------------------------------------------------------------------ lifecycle (main thread)

    def start(self, c: Any) -> None:
        if self.announce is not None:
            log, *args = self.announce
            self.announce = None
            log(*args)
        if self.folder is None:
            return
        self.connected, self.connected_at, self.lost_reason = True, time.time(), None
        if self.expected is None:
            self.expected = [queue.name for queue in c.task_consumer.queues]
        self.queued = False  # a request queued before a reconnect may have been dropped with the hub
        self.broker.start()
        self.tick()

    def stop(self, c: Any) -> None:
        if self.folder is None:
            return
        now = time.time()
        self.connected = False
        if c.blueprint.state == bootsteps.RUN:  # a restart: the connection was lost
            self.state, self.state_since = CONNECTING, now
            self.lost_reason = "connection to the broker lost, reconnecting"
        else:
            self.state, self.state_since = STOPPING, now
            self.lost_reason = "worker shutting down"
        self.write(now)

    def shutdown(self, c: Any) -> None:
        if self.folder is None:
            return
        self.stop(c)
        self.broker.stop()
        signals.task_prerun.disconnect(self.on_task_start)
        signals.task_postrun.disconnect(self.on_task_end)

    # ------------------------------------------------------------------ the loop's own writes

    def tick(self) -> None:
        """Timer entry: ask the consumer's loop to write (at most one request outstanding)."""
        if not self.queued:
            self.queued = True
            self.consumer.call_soon(self.report)

    def report(self) -> None:
        """Runs in the consumer's loop: the loop is turning, so say so."""
        self.queued = False
        if self.connected:
            self.state, self.state_since = (RUNNING, self.state_since if self.state == RUNNING else time.time())
        self.write(time.time())

    def on_task_start(self, task_id: str | None = None, task: Any = None, **_: Any) -> None:
        if os.getpid() != self.pid or threading.get_ident() != self.loop_thread:
            return  # not the solo loop's own task
        now = time.time()
        self.busy = busy_record(str(getattr(task, "name", "?")), str(task_id), now)
        self.write(now)

    def on_task_end(self, **_: Any) -> None:
        if os.getpid() != self.pid or threading.get_ident() != self.loop_thread or self.busy is None:
            return
        self.busy = None
        self.write(time.time())

    # ------------------------------------------------------------------ the records

    def consumed(self) -> list[str]:
        consumer = self.consumer.task_consumer
        if not self.connected or consumer is None:
            return []
        return [queue.name for queue in consumer.queues if consumer.consuming_from(queue.name)]

    def write(self, now: float) -> None:
        """Write both files; never raise into Celery's loop (a health file must not break the worker)."""
        try:
            self._write(now)
        except Exception:
            if not self.write_failing:
                logger.exception("celery-probe worker health: writing %s failed", self.folder)
            self.write_failing = True

    def _write(self, now: float) -> None:
        assert self.folder is not None
        consumed = self.consumed()
        self.seen.update(consumed)
        expected = self.expected or []
        problem = readiness_problem(
            connected=self.connected, lost_reason=self.lost_reason, expected=expected, consumed=consumed,
            cancelled=[name for name in self.seen if name not in consumed], broker_ok_at=self.broker.ok_at,
            broker_error=self.broker.error,
            broker_grace=2 * self.interval + self.broker.timeout if self.broker.method else None, now=now)
        if problem is None:
            self.not_ready_since = None
        elif self.not_ready_since is None:
            self.not_ready_since = now
        # Readiness first: a worker that stops or loses its broker is unready no later than its
        # liveness file says it is stopping or reconnecting: a rollout or a disruption budget sees
        # the worker unready before any other sign of the change.
        records = {
            READINESS: readiness_record(worker=self.worker, pid=self.pid, interval=self.interval, now=now,
                                        ready=problem is None, reason=problem,
                                        not_ready_since=self.not_ready_since, expected=expected,
                                        consumed=consumed, connected_at=self.connected_at,
                                        broker_ok_at=self.broker.ok_at, broker_check=self.broker.method,
                                        busy=self.busy, pid_start=self.pid_start),
            LIVENESS: liveness_record(worker=self.worker, pid=self.pid, pool=self.pool, interval=self.interval,
                                      now=now, state=self.state, since=self.state_since, busy=self.busy,
                                      pid_start=self.pid_start),
        }
        try:
            for kind, record in records.items():
                write_json(self.folder, FILES[kind], record)
        except OSError as exc:
            if not self.write_failing:
                logger.error("celery-probe worker health: cannot write %s: %s", self.folder, exc)
            self.write_failing = True
        else:
            if self.write_failing:
                logger.warning("celery-probe worker health: writing %s again", self.folder)
            self.write_failing = False
