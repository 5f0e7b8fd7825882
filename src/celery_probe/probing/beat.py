"""Beat health: proof that ``celery beat`` is scheduling, from a tick it sends.

In the Celery app (the module workers and beat both load)::

    from celery_probe.probing.beat import install_beat_tick

    install_beat_tick(app, interval=60)

registers the task ``celery_probe.beat_tick`` and a ``beat_schedule`` entry that sends it
every ``interval`` seconds. A worker runs the tick, which stores the Redis server's time
under a key (default ``celery-probe:beat:last-tick``): in the broker's Redis when the
broker is Redis, else in the result backend's Redis. The probe reads the key and the same
server's ``TIME`` in one round trip, so clocks of different hosts never matter, and calls
beat stale when the last tick is older than ``interval × grace``.

When the app schedules with celery-redbeat (``beat_scheduler`` names redbeat), the probe
also reads redbeat's lock (``redbeat::lock``) and schedule (``redbeat::schedule``, a sorted
set scored by next run time), honouring ``redbeat_key_prefix``, ``redbeat_lock_key`` and
``redbeat_redis_url``; redbeat itself need not be installed where the probe runs.

Everything that reads here takes a connection the caller bounded; :func:`judge_beat` is
pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from celery_probe.probing.redis_access import plain_client, server_time, transport_name

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Connection

TICK_TASK = "celery_probe.beat_tick"
DEFAULT_KEY = "celery-probe:beat:last-tick"
SCHEDULE_ENTRY = "celery-probe-beat-tick"
MIN_TICK_TTL = 86_400  # seconds a tick is kept at least; then 10 intervals
REDBEAT_DEFAULT_PREFIX = "redbeat:"
NO_STORE = "beat ticks need a Redis broker or a Redis result backend"


# ------------------------------------------------------------------------ the tick


def install_beat_tick(
    app: Celery,
    interval: float = 60.0,
    key: str = DEFAULT_KEY,
    *,
    queue: str | None = None,
    name: str = SCHEDULE_ENTRY,
) -> Any:
    """Register ``celery_probe.beat_tick`` on ``app`` and schedule it every ``interval`` s.

    Call it where the app is defined, so workers and beat both see it; it may be called
    before or after the app is configured. ``queue`` routes the tick (default: the app's
    routing). Each tick expires after one interval, so ticks never pile up in a backlog.
    Returns the task.
    """
    interval = float(interval)
    if not interval > 0:
        raise ValueError(f"beat tick interval must be positive, not {interval!r}")
    if not key:
        raise ValueError("beat tick key must not be empty")

    @app.task(name=TICK_TASK, bind=True, ignore_result=True, shared=False)  # type: ignore[untyped-decorator]
    def beat_tick(self: Any, key: str = DEFAULT_KEY, interval: float = 60.0) -> None:
        record_tick(self.app, key, interval, worker=self.request.hostname)

    options: dict[str, Any] = {"expires": max(1.0, interval)}
    if queue:
        options["queue"] = queue
    app.add_periodic_task(
        interval,
        app.signature(TICK_TASK, kwargs={"key": key, "interval": interval}),
        name=name,
        **options,
    )
    return beat_tick


def tick_store(app: Celery, conn: Connection) -> tuple[str, Any] | None:
    """Where ticks live: ``("broker", client)``, ``("result backend", client)`` or None."""
    if transport_name(conn) == "redis":
        return "broker", plain_client(conn.default_channel)
    backend = app.backend
    if type(backend).__name__ in {"RedisBackend", "SentinelBackend"}:
        return "result backend", backend.client
    return None


def record_tick(app: Celery, key: str, interval: float, *, worker: str | None = None) -> float:
    """Store the Redis server's time under ``key`` (run by a worker); return that time."""
    with app.connection_for_write() as conn:
        store = tick_store(app, conn)
        if store is None:
            raise RuntimeError(NO_STORE)
        _where, client = store
        now = server_time(client.time())
        value = json.dumps({"at": now, "worker": worker, "interval": float(interval)})
        client.set(key, value, ex=max(MIN_TICK_TTL, int(float(interval) * 10)))
    return now


# ------------------------------------------------------------------------ reading


@dataclass
class RedbeatState:
    """What redbeat's keys say: who holds the lock, and the next entry due."""

    schedule_key: str
    lock_key: str
    lock_ttl_s: float | None = None  # None: no lock held
    entries: int = 0
    next_entry: str | None = None
    next_run: float | None = None  # epoch seconds
    overdue_s: float | None = None  # > 0: the next entry is late by this much
    error: str | None = None


@dataclass
class BeatState:
    """The last tick as the store says, measured against the store's own clock."""

    available: bool
    key: str
    store: str | None = None
    now: float | None = None
    last_tick: float | None = None
    age_s: float | None = None
    worker: str | None = None
    tick_interval: float | None = None
    reason: str | None = None
    redbeat: RedbeatState | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_beat(app: Celery, conn: Connection, key: str, *, timeout: float) -> BeatState:
    """Read the last tick (and redbeat's keys when the app uses redbeat)."""
    store = tick_store(app, conn)
    state = BeatState(available=store is not None, key=key)
    if store is None:
        state.reason = NO_STORE
    else:
        state.store, client = store
        with client.pipeline(transaction=False) as pipe:
            pipe.get(key)
            pipe.time()
            raw, now = pipe.execute()
        state.now = server_time(now)
        _fill_tick(state, raw)
    config = redbeat_config(app)
    if config is not None:
        state.redbeat = read_redbeat(app, conn, config, timeout=timeout)
        if not state.available and state.redbeat.error is None:
            state.available, state.reason = True, None
    return state


def _fill_tick(state: BeatState, raw: Any) -> None:
    if raw is None:
        return
    try:
        value = json.loads(raw)
    except (TypeError, ValueError, UnicodeDecodeError):
        value = None
    if isinstance(value, Mapping) and isinstance(value.get("at"), (int, float)):
        at = float(value["at"])
        worker = value.get("worker")
        interval = value.get("interval")
        state.worker = worker if isinstance(worker, str) else None
        state.tick_interval = float(interval) if isinstance(interval, (int, float)) else None
    else:
        try:
            at = float(raw)  # a bare timestamp, as a hand-written tick would store it
        except (TypeError, ValueError):
            state.reason = f"the value under {state.key!r} is not a beat tick"
            return
    state.last_tick = at
    if state.now is not None:
        state.age_s = round(max(0.0, state.now - at), 3)


def _conf(app: Celery, name: str) -> Any:
    conf = app.conf
    for candidate in (name, name.upper()):
        try:
            value = conf.get(candidate)
        except Exception:
            value = None
        if value:
            return value
    return None


def redbeat_config(app: Celery) -> dict[str, Any] | None:
    """redbeat's keys and Redis URL for ``app``, or None when it does not use redbeat."""
    scheduler = app.conf.beat_scheduler
    name = scheduler if isinstance(scheduler, str) else getattr(scheduler, "__module__", "") or ""
    if "redbeat" not in str(name).lower():
        return None
    prefix = str(_conf(app, "redbeat_key_prefix") or REDBEAT_DEFAULT_PREFIX)
    lock_key = _conf(app, "redbeat_lock_key")
    lock_key = str(lock_key) if lock_key else f"{prefix}:lock"
    if not lock_key.startswith(prefix):
        lock_key = prefix + lock_key  # as redbeat does with a bare lock key
    return {
        "schedule_key": f"{prefix}:schedule",
        "lock_key": lock_key,
        "url": _conf(app, "redbeat_redis_url"),
    }


def read_redbeat(app: Celery, conn: Connection, config: Mapping[str, Any], *, timeout: float) -> RedbeatState:
    """Lock TTL, schedule size and the earliest next run, in one pipelined round trip."""
    state = RedbeatState(schedule_key=config["schedule_key"], lock_key=config["lock_key"])
    url = config.get("url")
    client = None
    try:
        if url and url != app.conf.broker_url:
            import redis

            client = redis.Redis.from_url(
                url, socket_timeout=max(0.05, timeout), socket_connect_timeout=max(0.05, timeout)
            )
        elif transport_name(conn) == "redis":
            client = plain_client(conn.default_channel)
        else:
            state.error = "redbeat keeps its schedule in Redis, but neither redbeat_redis_url nor the broker is Redis"
            return state
        with client.pipeline(transaction=False) as pipe:
            pipe.pttl(state.lock_key)
            pipe.zcard(state.schedule_key)
            pipe.zrange(state.schedule_key, 0, 0, withscores=True)
            pipe.time()
            lock_ms, entries, first, now = pipe.execute()
    except Exception as exc:
        from celery_probe.errors import describe_error

        state.error = describe_error(exc)
        return state
    finally:
        if client is not None and url and url != app.conf.broker_url:
            try:
                client.close()
            except Exception:
                pass
    clock = server_time(now)
    # PTTL: -2 no key, -1 no expiry (held for good), else milliseconds left.
    state.lock_ttl_s = None if lock_ms == -2 else (-1.0 if lock_ms == -1 else round(lock_ms / 1000, 3))
    state.entries = int(entries)
    if first:
        member, score = first[0]
        state.next_entry = member.decode(errors="replace") if isinstance(member, bytes) else str(member)
        state.next_run = float(score)
        state.overdue_s = round(clock - float(score), 3)
    return state


# ------------------------------------------------------------------------ judging (pure)


def judge_beat(state: BeatState, interval: float, grace: float) -> str | None:
    """Why beat counts as stale (one line), or None when it is scheduling."""
    limit = interval * grace
    problems: list[str] = []
    where = f" in the {state.store}" if state.store else ""
    if state.store is not None:
        if state.last_tick is None:
            problems.append(
                state.reason
                or f"no beat tick recorded under {state.key!r}{where}: celery beat is not running, "
                "or the app does not call install_beat_tick, or uses another key"
            )
        elif state.age_s is not None and state.age_s > limit:
            by = f" (run by {state.worker})" if state.worker else ""
            problems.append(
                f"last beat tick {state.age_s:.1f}s ago{by}, expected every {interval:g}s "
                f"(stale after {limit:g}s)"
            )
    red = state.redbeat
    if red is not None and red.error is None and red.overdue_s is not None and red.overdue_s > limit:
        lock = "no beat holds the redbeat lock" if red.lock_ttl_s is None else "the redbeat lock is held"
        problems.append(
            f"redbeat entry {red.next_entry!r} is {red.overdue_s:.1f}s overdue ({lock})"
        )
    return "; ".join(problems) or None
