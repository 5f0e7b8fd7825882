"""The pure judgement of a review: from :class:`~.facts.Facts` to one :class:`Check` per rule.

Each rule returns a finding (with what was seen, as values), a pass, "not checked" (with why:
the fact it needs could not be learnt) or "not applicable" (another broker). No I/O here, no
clock: the facts carry times relative to when they were gathered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from celery_probe.doctor.catalogue import CRITICAL, INFO, RULE_BY_CODE, RULES, WARNING, Rule
from celery_probe.doctor.facts import AppFacts, Facts, Unchecked, WorkerFacts

FINDING = "finding"
PASSED = "passed"
NOT_CHECKED = "not checked"
NOT_APPLICABLE = "not applicable"
LISTED = 5  # names shown in one line of evidence before "and N more"


@dataclass(frozen=True)
class Check:
    """The outcome of one rule."""

    code: str
    status: str
    severity: str | None = None  # findings only
    seen: str = ""  # the evidence (a finding, or what a pass rests on)
    reason: str = ""  # not checked / not applicable: why

    @property
    def rule(self) -> Rule:
        return RULE_BY_CODE[self.code]


def _finding(code: str, severity: str, seen: str) -> Check:
    return Check(code, FINDING, severity, seen)


def _passed(code: str, seen: str = "") -> Check:
    return Check(code, PASSED, seen=seen)


def _unchecked(code: str, reason: str) -> Check:
    return Check(code, NOT_CHECKED, reason=reason)


def listed(names: Iterable[str], limit: int = LISTED) -> str:
    """``a, b, c and 4 more``."""
    items = list(names)
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value >= 10 else f"{value:g}s"


def _workers(facts: Facts) -> list[WorkerFacts] | None:
    return facts.workers if isinstance(facts.workers, list) else None


def _workers_reason(facts: Facts) -> str:
    if isinstance(facts.workers, Unchecked):
        return facts.workers.reason
    return "no worker answered ping"


# ------------------------------------------------------------------------------------ Redis


def redis_eviction(facts: Facts) -> Check:
    code = "redis-eviction-policy"
    redis = facts.broker.redis
    if redis is None:
        return _unchecked(code, facts.broker.error or "the broker gave no answer")
    policy = redis.maxmemory_policy
    if isinstance(policy, Unchecked):
        return _unchecked(code, policy.reason)
    limit = redis.maxmemory
    shown = f"maxmemory-policy {policy}, maxmemory {limit if limit is not None else '?'}"
    if policy == "noeviction":
        return _passed(code, shown)
    if limit == 0:  # no limit today: nothing is evicted until somebody sets one
        return _finding(code, WARNING, f"{shown} (no memory limit yet, so nothing is evicted until one is set)")
    return _finding(code, CRITICAL, shown)


def redis_visibility_eta(facts: Facts) -> Check:
    code = "redis-visibility-timeout"
    redis = facts.broker.redis
    if redis is None:
        return _unchecked(code, facts.broker.error or "the broker gave no answer")
    if isinstance(redis.etas, Unchecked):
        return _unchecked(code, redis.etas.reason)
    timeout, whose = _visibility_timeout(facts)
    late = []
    for eta in redis.etas:
        if eta.where == "unacked" and eta.redelivery_in is not None:
            if eta.eta_in > eta.redelivery_in:
                late.append(eta)
        elif eta.eta_in > timeout:
            late.append(eta)
    scanned = f"{redis.scanned} messages read" + (" (more were left unread)" if redis.truncated else "")
    if not late:
        longest = max((e.eta_in for e in redis.etas), default=None)
        return _passed(code, f"visibility_timeout {_seconds(timeout)} ({whose}); longest ETA waiting "
                             + (f"{_seconds(longest)}" if longest is not None else "none") + f"; {scanned}")
    late.sort(key=lambda e: -e.eta_in)
    worst = late[0]
    shown = [f"{e.task} in {e.queue} ({e.where}) due in {_seconds(e.eta_in)}" for e in late]
    return _finding(code, CRITICAL,
                    f"visibility_timeout {_seconds(timeout)} ({whose}) but {len(late)} message(s) wait longer: "
                    f"{listed(shown, 3)}; longest {_seconds(worst.eta_in)}; {scanned}")


def _visibility_timeout(facts: Facts) -> tuple[float, str]:
    """The shortest visibility timeout of the app and the workers, and whose it is.

    Any consumer restores the unacked messages older than its own timeout, so the shortest wins.
    """
    app = facts.app
    timeout, whose = 3600.0, "default"
    if isinstance(app, AppFacts) and app.visibility_timeout_set:
        timeout, whose = app.visibility_timeout, "set by the app"
    for worker in _workers(facts) or []:
        options = worker.setting("broker_transport_options")
        value = options.get("visibility_timeout") if isinstance(options, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < timeout:
            timeout, whose = float(value), f"set on {worker.name}"
    return timeout, whose


def redis_visibility_acks_late(facts: Facts) -> Check:
    code = "redis-visibility-timeout-acks-late"
    app = facts.app
    if isinstance(app, Unchecked):
        return _unchecked(code, app.reason)
    timeout, _whose = _visibility_timeout(facts)
    # A task's own limit, where it differs from the app's (Celery copies task_time_limit onto tasks).
    limits = [(t.name, t.time_limit) for t in app.tasks if t.time_limit is not None and t.time_limit != app.time_limit]
    if app.time_limit is not None:
        limits.append(("task_time_limit", app.time_limit))
    if not app.acks_late:
        return _passed(code, "task_acks_late is off")
    over = sorted(((name, limit) for name, limit in limits if limit > timeout), key=lambda x: -x[1])
    if over:
        return _finding(code, CRITICAL, f"task_acks_late on, visibility_timeout {_seconds(timeout)}, but "
                        + listed(f"{name} {_seconds(limit)}" for name, limit in over))
    if app.time_limit is None and any(t.time_limit is None for t in app.tasks):
        return _finding(code, WARNING, f"task_acks_late on, visibility_timeout {_seconds(timeout)}, and no "
                        "task_time_limit: a task running longer than that is delivered again")
    return _passed(code, f"task_acks_late on; every time limit is within visibility_timeout {_seconds(timeout)}")


# ------------------------------------------------------------------------------- RabbitMQ


def quorum_eta(facts: Facts) -> Check:
    code = "quorum-queue-eta"
    quorum: dict[str, str] = {}
    if isinstance(facts.app, AppFacts):
        quorum.update(facts.app.quorum_queues)
    workers = _workers(facts) or []
    for worker in workers:
        for queue in worker.queues:
            if queue.queue_type == "quorum":
                quorum.setdefault(queue.name, queue.exchange_type or "direct")
    if not quorum:
        if isinstance(facts.app, Unchecked) and not workers:
            return _unchecked(code, f"{facts.app.reason}; {_workers_reason(facts)}")
        return _passed(code, "no quorum queue in the app's queues or the workers' queues")
    problems = []
    direct = sorted(name for name, kind in quorum.items() if kind == "direct")
    if direct:
        problems.append(f"quorum queue(s) {listed(direct)} on a direct exchange (native delayed delivery "
                        "needs a topic or fanout exchange)")
    undetected = [w.name for w in workers if w.setting("worker_detect_quorum_queues") is False]
    if undetected:
        problems.append(f"worker_detect_quorum_queues off on {listed(undetected)} (global QoS, which quorum "
                        "queues refuse, and no native delayed delivery)")
    old = _old_celery(facts, (5, 5))
    if old:
        problems.append(f"Celery older than 5.5 (no native delayed delivery) on {listed(old)}")
    if not problems:
        return _passed(code, f"quorum queue(s) {listed(sorted(quorum))} on topic/fanout exchanges, "
                             "native delayed delivery available")
    held = {w.name: w.scheduled for w in workers if w.scheduled}
    severity = CRITICAL if held else WARNING
    seen = "; ".join(problems)
    if held:
        seen += "; countdown/ETA tasks held now: " + listed(f"{name} {count}" for name, count in sorted(held.items()))
    return _finding(code, severity, seen)


def _version(text: str | None) -> tuple[int, ...] | None:
    parts = []
    for piece in (text or "").split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


def _old_celery(facts: Facts, minimum: tuple[int, ...]) -> list[str]:
    old = []
    if isinstance(facts.app, AppFacts) and (v := _version(facts.app.celery_version)) and v < minimum:
        old.append(f"the app ({facts.app.celery_version})")
    for worker in _workers(facts) or []:
        if (v := _version(worker.celery_version)) and v < minimum:
            old.append(f"{worker.name} ({worker.celery_version})")
    return old


# ------------------------------------------------------------------------------- any broker


def no_time_limit(facts: Facts) -> Check:
    code = "no-time-limit"
    app = facts.app
    workers = _workers(facts) or []
    if isinstance(app, Unchecked) and not workers:
        return _unchecked(code, f"{app.reason}; {_workers_reason(facts)}")
    seen = []
    if isinstance(app, AppFacts):
        app_limit = app.time_limit is not None or app.soft_time_limit is not None
        unlimited = [t.name for t in app.tasks if t.time_limit is None and t.soft_time_limit is None]
        if not app_limit and unlimited:
            seen.append(f"task_time_limit and task_soft_time_limit unset on the app; tasks without a limit: "
                        f"{listed(unlimited)}")
    # Only the workers whose conf or stats answered are evidence either way.
    worker_known = [w for w in workers if w.conf is not None or w.pool_timeouts is not None]
    worker_unlimited = [w.name for w in worker_known if not _worker_has_limit(w)]
    if worker_unlimited and (seen or isinstance(app, Unchecked)):
        seen.append(f"workers without a time limit (inspect conf and stats): {listed(worker_unlimited)}")
    elif seen and worker_known and not worker_unlimited:
        return _passed(code, "the app sets no limit, but every answering worker runs with one")
    if seen:
        return _finding(code, WARNING, "; ".join(seen))
    return _passed(code, "every task has a hard or soft time limit")


def _worker_has_limit(worker: WorkerFacts) -> bool:
    if worker.setting("task_time_limit") or worker.setting("task_soft_time_limit"):
        return True
    return bool(worker.pool_timeouts and any(worker.pool_timeouts))


def _setting_check(facts: Facts, code: str, key: str, *, severity: str) -> Check:
    """A setting the app and every worker should set explicitly."""
    app = facts.app
    workers = _workers(facts) or []
    if isinstance(app, Unchecked) and not workers:
        return _unchecked(code, f"{app.reason}; {_workers_reason(facts)}")
    missing = []
    if isinstance(app, AppFacts) and key not in app.set_keys:
        missing.append("the app")
    missing += [w.name for w in workers if w.conf is not None and key not in w.conf]
    if missing:
        return _finding(code, severity, f"{key} unset on {listed(missing)}")
    return _passed(code, f"{key} set")


def cancel_on_connection_loss(facts: Facts) -> Check:
    acks_late = isinstance(facts.app, AppFacts) and facts.app.acks_late
    check = _setting_check(facts, "cancel-on-connection-loss",
                           "worker_cancel_long_running_tasks_on_connection_loss",
                           severity=WARNING if acks_late else INFO)
    if check.status == FINDING and acks_late:
        return Check(check.code, check.status, check.severity, check.seen + " (and task_acks_late is on)")
    return check


def connection_retry_on_startup(facts: Facts) -> Check:
    return _setting_check(facts, "connection-retry-on-startup", "broker_connection_retry_on_startup",
                          severity=WARNING)


def no_result_backend(facts: Facts) -> Check:
    code = "no-result-backend"
    app = facts.app
    workers = _workers(facts) or []
    if isinstance(app, Unchecked) and not workers:
        return _unchecked(code, f"{app.reason}; {_workers_reason(facts)}")
    without = []
    if isinstance(app, AppFacts) and not app.result_backend:
        without.append("the app")
    without += [w.name for w in workers if w.backend == "disabled"]  # None: its report did not come
    if not without:
        return _passed(code, "a result backend is configured")
    severity = CRITICAL if facts.queue_slas else WARNING
    seen = f"no result backend on {listed(without)}"
    if facts.queue_slas:
        seen += f"; round-trip SLAs are configured for {listed(facts.queue_slas)}, which cannot be measured"
    return _finding(code, severity, seen)


def task_events(facts: Facts) -> Check:
    code = "task-events-off"
    if not facts.task_slas:
        return Check(code, NOT_APPLICABLE, reason="no task SLA is configured (task-sla)")
    if facts.events is None or isinstance(facts.events, Unchecked):
        return _unchecked(code, facts.events.reason if facts.events else "the events were not listened to")
    events = facts.events
    sla = f"task SLAs {listed(facts.task_slas)}"
    if events.missing_exchange:
        return _finding(code, WARNING, f"{sla}; the events exchange {events.missing_exchange} does not exist on the "
                                       "broker, so no worker has ever sent an event")
    silent = []
    for queue, task_id in sorted(events.sent.items()):
        if events.task_events_from.get(queue):
            continue
        ran = events.ran.get(queue)
        state = "its result came back" if ran else ("no result backend to confirm it ran" if ran is None
                                                    else "its result did not come back")
        silent.append(f"{queue} ({state})")
    if not events.sent:
        return _unchecked(code, "no queue with a consumer to send a no-op task through")
    if silent:
        return _finding(code, WARNING,
                        f"{sla}; a no-op task sent through {listed(silent)} gave no task event in "
                        f"{_seconds(events.listened_s)}")
    senders = sorted({w for names in events.task_events_from.values() for w in names})
    return _passed(code, f"{sla}; task events from {listed(senders)}")


def version_drift(facts: Facts) -> Check:
    code = "version-drift"
    workers = _workers(facts)
    if not workers:
        return _unchecked(code, _workers_reason(facts))
    seen = []
    for lib, app_version, of in (("celery", facts.probe_celery_version, "celery_version"),
                                 ("kombu", facts.probe_kombu_version, "kombu_version")):
        versions: dict[str, list[str]] = {}
        if isinstance(facts.app, AppFacts):
            versions.setdefault(app_version, []).append("the app")
        for worker in workers:
            found = getattr(worker, of)
            if found:
                versions.setdefault(found, []).append(worker.name)
        if len(versions) > 1:
            seen.append(f"{lib} " + "; ".join(f"{v} on {listed(names)}" for v, names in sorted(versions.items())))
    if not any(w.celery_version for w in workers):
        return _unchecked(code, "no worker answered inspect report")
    if seen:
        return _finding(code, WARNING, "; ".join(seen))
    return _passed(code, f"celery {workers[0].celery_version or '?'} and kombu {workers[0].kombu_version or '?'} "
                         "everywhere")


def queue_drift(facts: Facts) -> Check:
    code = "queue-drift"
    app = facts.app
    if isinstance(app, Unchecked):
        return _unchecked(code, app.reason)
    workers = [w for w in _workers(facts) or [] if w.answered_queues]
    if not workers:
        return _unchecked(code, "no worker answered active_queues" if _workers(facts) else _workers_reason(facts))
    known = {app.default_queue, *app.declared_queues, *app.routed_queues}
    stray: dict[str, list[str]] = {}
    for worker in workers:
        for queue in worker.queues:
            if not queue.broadcast and queue.name not in known and not queue.name.startswith("celery_delayed_"):
                stray.setdefault(queue.name, []).append(worker.name)
    if not stray:
        return _passed(code, f"every consumed queue is declared or routed to ({listed(sorted(known))})")
    seen = "; ".join(f"{queue} consumed by {listed(names)}" for queue, names in sorted(stray.items()))
    seen += f"; the app knows {listed(sorted(known))}"
    if app.unlisted_routers:
        seen += f" (and routers whose queues cannot be listed: {listed(app.unlisted_routers)})"
    return _finding(code, WARNING if not app.unlisted_routers else INFO, seen)


RuleFunction = Callable[[Facts], Check]
RULE_FUNCTIONS: dict[str, RuleFunction] = {
    "redis-eviction-policy": redis_eviction,
    "redis-visibility-timeout": redis_visibility_eta,
    "redis-visibility-timeout-acks-late": redis_visibility_acks_late,
    "quorum-queue-eta": quorum_eta,
    "no-time-limit": no_time_limit,
    "cancel-on-connection-loss": cancel_on_connection_loss,
    "connection-retry-on-startup": connection_retry_on_startup,
    "no-result-backend": no_result_backend,
    "task-events-off": task_events,
    "version-drift": version_drift,
    "queue-drift": queue_drift,
}

NEEDS_BROKER = {"redis-eviction-policy", "redis-visibility-timeout", "quorum-queue-eta", "task-events-off",
                "version-drift", "queue-drift"}


def evaluate(facts: Facts) -> list[Check]:
    """One :class:`Check` per rule, in the catalogue's order."""
    checks = []
    for rule in RULES:
        if rule.broker and facts.broker.transport != rule.broker:
            checks.append(Check(rule.code, NOT_APPLICABLE, reason=f"the broker is {facts.broker.transport}, "
                                                                  f"not {rule.broker}"))
            continue
        if rule.code in NEEDS_BROKER and not facts.broker.reachable and rule.code != "quorum-queue-eta":
            checks.append(_unchecked(rule.code, f"the broker did not answer: {facts.broker.error}"))
            continue
        checks.append(RULE_FUNCTIONS[rule.code](facts))
    return checks
