"""What to alert, decided by a pure function of (previous state, new verdict, now, policy).

No I/O and no clock: :func:`decide` is given the time, so every rule below is unit-tested
without a server, a file or a sleep. The rules, as the README states them:

* an alert goes out on a **change of state**: healthy -> not healthy (``problem``), one
  non-healthy status to another (``change``, e.g. degraded -> down), and back to healthy
  (``recovery``, only if a problem alert was raised);
* while the status stays the same non-healthy one, a reminder (``repeat``) goes out every
  ``repeat_every`` seconds (0: never);
* ``min_failures`` consecutive non-healthy runs are needed before a problem alert, and a
  new status must be seen that many runs in a row before a change alert (flap suppression);
* every notification is queued per channel and stays queued until that channel accepted it
  (at-least-once delivery); a queued reminder is superseded by any newer notification for
  the same channel, and each channel keeps at most ``max_pending`` notifications.

Without a stored state (no ``--state-file``) ``decide(None, ...)`` alerts on every
non-healthy run and never sends a recovery, which is the documented stateless behaviour.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from celery_probe.numbers import number
from celery_probe.verdict.flower import safe_link, safe_links
from celery_probe.config.urls import scrub
from celery_probe.verdict.mapper import STATUSES

NON_HEALTHY = ("degraded", "down", "unknown")
EVENTS = ("problem", "change", "repeat", "recovery")
STATE_VERSION = 1
MAX_REASONS = 20
MAX_TEXT = 500


@dataclass(frozen=True)
class Policy:
    """When to alert. Defaults match the CLI's."""

    repeat_every: float = 3600.0
    min_failures: int = 1
    max_pending: int = 20


@dataclass(frozen=True)
class Notification:
    """One alert, as decided; rendered into a mail or a webhook payload at send time.

    ``verdict`` is the compact, scrubbed summary from :func:`summarize_verdict`: it is
    stored in the state file, so it must never hold a credential.
    """

    event: str
    status: str
    previous_status: str | None
    created_at: str
    since: str | None
    verdict: Mapping[str, Any]

    @property
    def id(self) -> str:
        """Stable across retries, so a receiver (or a mail client) can drop a duplicate."""
        key = f"{self.created_at}|{self.event}|{self.status}"
        return hashlib.sha256(key.encode()).hexdigest()[:20]

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": self.event, "status": self.status, "previous_status": self.previous_status,
            "created_at": self.created_at, "since": self.since, "verdict": dict(self.verdict),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Notification:
        if not isinstance(data, Mapping):
            raise ValueError("notification is not an object")
        event, status = data.get("event"), data.get("status")
        if event not in EVENTS or status not in STATUSES:
            raise ValueError(f"unknown event {event!r} or status {status!r}")
        created = data.get("created_at")
        if not isinstance(created, str) or parse_time(created) is None:
            raise ValueError("notification has no valid created_at")
        verdict = data.get("verdict")
        return cls(
            event=event, status=status,
            previous_status=_status_or_none(data.get("previous_status")),
            created_at=created, since=_text_or_none(data.get("since")),
            verdict=dict(verdict) if isinstance(verdict, Mapping) else {},
        )


@dataclass(frozen=True)
class Pending:
    """A notification not yet accepted by one channel."""

    channel: str
    notification: Notification
    attempts: int = 0
    last_error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.channel, self.notification.id)

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "attempts": self.attempts, "last_error": self.last_error,
                "notification": self.notification.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> Pending:
        if not isinstance(data, Mapping) or not isinstance(data.get("channel"), str):
            raise ValueError("pending entry has no channel")
        attempts = data.get("attempts")
        return cls(
            channel=data["channel"], notification=Notification.from_dict(data.get("notification")),
            attempts=attempts if isinstance(attempts, int) and attempts >= 0 else 0,
            last_error=_text_or_none(data.get("last_error")),
        )


@dataclass(frozen=True)
class AlertState:
    """What one run leaves for the next (the state file's content).

    ``status_runs`` counts consecutive runs with exactly ``status``; ``streak`` counts
    consecutive non-healthy runs; ``before`` is the status seen just before the streak
    began; ``alerted`` is the status of the open problem (None: no problem alert open).
    """

    status: str | None = None
    status_runs: int = 0
    streak: int = 0
    before: str | None = None
    since: str | None = None
    alerted: str | None = None
    last_alert_at: str | None = None
    updated_at: str | None = None
    pending: tuple[Pending, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION, "status": self.status, "status_runs": self.status_runs,
            "streak": self.streak, "before": self.before, "since": self.since,
            "alerted": self.alerted, "last_alert_at": self.last_alert_at,
            "updated_at": self.updated_at, "pending": [p.to_dict() for p in self.pending],
        }

    @classmethod
    def from_dict(cls, data: Any) -> AlertState:
        """Parse a stored state; raise ValueError on anything that is not one."""
        if not isinstance(data, Mapping) or data.get("version") != STATE_VERSION:
            raise ValueError("not a celery-probe alert state (version 1)")
        pending = data.get("pending") or []
        if not isinstance(pending, list):
            raise ValueError("pending is not a list")
        return cls(
            status=_status_or_none(data.get("status")),
            status_runs=_count(data.get("status_runs")),
            streak=_count(data.get("streak")),
            before=_status_or_none(data.get("before")),
            since=_text_or_none(data.get("since")),
            alerted=_status_or_none(data.get("alerted")),
            last_alert_at=_text_or_none(data.get("last_alert_at")),
            updated_at=_text_or_none(data.get("updated_at")),
            pending=tuple(Pending.from_dict(p) for p in pending),
        )


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide`.

    ``state`` is what to store *before* sending (every delivery still pending), so a run
    killed mid-send retries instead of forgetting. ``deliveries`` is everything to attempt
    now, oldest first. ``dropped`` were given up on (their channel is no longer configured,
    or the channel's queue is over ``max_pending``): the caller reports them.
    """

    state: AlertState
    notification: Notification | None
    deliveries: tuple[Pending, ...]
    dropped: tuple[Pending, ...] = ()
    superseded: tuple[Pending, ...] = field(default=(), compare=False)


# ------------------------------------------------------------------------------ helpers


def iso(moment: datetime) -> str:
    """UTC ISO 8601 with microseconds (notification ids depend on it being unique per run)."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _status_or_none(value: Any) -> str | None:
    return value if value in STATUSES else None


def _text_or_none(value: Any) -> str | None:
    return value[:MAX_TEXT] if isinstance(value, str) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _one_line(value: Any, limit: int = MAX_TEXT) -> str:
    """Untrusted text made safe for one line of a body: no control characters, bounded."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return " ".join(text.split())[:limit]


def summarize_verdict(verdict: Any, secrets: Iterable[str] = (), *, source: str | None = None) -> dict[str, Any]:
    """The part of a verdict an alert shows, scrubbed of credentials and made safe to print.

    ``verdict`` may come from a remote endpoint, so nothing about its shape is trusted:
    unknown statuses become ``unknown``, texts lose control characters and are truncated,
    numbers must be numbers. ``source`` names where it was read (the check URL, redacted).
    """
    data = scrub(verdict if isinstance(verdict, Mapping) else {}, secrets)
    status = data.get("status") if data.get("status") in STATUSES else "unknown"
    alive = data.get("worker_alive")
    reasons = []
    for reason in data.get("reasons") or []:
        if isinstance(reason, Mapping):
            reasons.append({
                "code": _one_line(reason.get("code") or "unspecified", 100),
                "severity": _one_line(reason.get("severity") or "unspecified", 20),
                "message": _one_line(reason.get("message") or ""),
            })
            link = safe_link(reason.get("link"))
            if link is not None:
                reasons[-1]["link"] = link
        elif isinstance(reason, str):
            reasons.append({"code": "unspecified", "severity": "unspecified", "message": _one_line(reason)})
        if len(reasons) >= MAX_REASONS:
            break
    summary: dict[str, Any] = {
        "status": status,
        "worker_alive": alive if isinstance(alive, bool) else None,
        "active_tasks": number(data.get("active_tasks")),
        "scheduled_tasks": number(data.get("scheduled_tasks")),
        "queue_length": number(data.get("queue_length")),
        "last_heartbeat": _one_line(data["last_heartbeat"], 64) if isinstance(data.get("last_heartbeat"), str) else None,
        "checked_at": _one_line(data["checked_at"], 64) if isinstance(data.get("checked_at"), str) else None,
        "target": _one_line(data["target"], 300) if isinstance(data.get("target"), str) and data["target"] else None,
        "reasons": reasons,
    }
    links = safe_links(data.get("links"))
    if links:
        summary["links"] = links
    if source:
        clean = _one_line(scrub(source, secrets), 300)
        summary["source"] = clean
        if summary["target"] is None:
            summary["target"] = clean
    return summary


# ------------------------------------------------------------------------------ decide


def decide(
    previous: AlertState | None,
    summary: Mapping[str, Any],
    now: datetime,
    policy: Policy,
    channels: Sequence[str],
) -> Decision:
    """Given the stored state, this run's verdict summary and the time, what to send."""
    prev = previous or AlertState()
    now_iso = iso(now)
    status = str(summary.get("status")) if summary.get("status") in STATUSES else "unknown"
    status_runs = prev.status_runs + 1 if prev.status == status else 1
    note: Notification | None = None
    alerted, last_alert_at = prev.alerted, prev.last_alert_at

    if status == "healthy":
        streak, before, since = 0, None, None
        if prev.alerted is not None:
            note = Notification("recovery", status, prev.alerted, now_iso, prev.since, summary)
            alerted, last_alert_at = None, now_iso
    else:
        continuing = prev.status in NON_HEALTHY and prev.streak > 0
        streak = prev.streak + 1 if continuing else 1
        before = prev.before if continuing else prev.status
        since = (prev.since if continuing else None) or now_iso
        if prev.alerted is None:
            if streak >= policy.min_failures:
                note = Notification("problem", status, before, now_iso, since, summary)
        elif prev.alerted != status:
            if status_runs >= policy.min_failures:
                note = Notification("change", status, prev.alerted, now_iso, since, summary)
        elif policy.repeat_every > 0:
            last = parse_time(prev.last_alert_at)
            if last is None or now < last:
                # No record, or the clock went back: start the interval again from now.
                last_alert_at = now_iso
            elif (now - last).total_seconds() >= policy.repeat_every:
                note = Notification("repeat", status, status, now_iso, since, summary)
        if note is not None:
            alerted, last_alert_at = status, now_iso

    deliveries, dropped, superseded = _queue(prev.pending, note, channels, policy.max_pending)
    state = AlertState(
        status=status, status_runs=status_runs, streak=streak, before=before, since=since,
        alerted=alerted, last_alert_at=last_alert_at, updated_at=now_iso, pending=deliveries,
    )
    return Decision(state, note, deliveries, dropped, superseded)


def _queue(
    pending: Sequence[Pending], note: Notification | None, channels: Sequence[str], cap: int,
) -> tuple[tuple[Pending, ...], tuple[Pending, ...], tuple[Pending, ...]]:
    """Add ``note`` for every channel to what is still pending; drop what must go."""
    configured = list(dict.fromkeys(channels))
    kept = [p for p in pending if p.channel in configured]
    dropped = [p for p in pending if p.channel not in configured]
    superseded: list[Pending] = []
    if note is not None:
        for channel in configured:
            mine = [p for p in kept if p.channel == channel]
            if note.event == "repeat" and any(p.notification.status == note.status for p in mine):
                continue  # an undelivered alert about this very status already says it
            if note.event != "repeat":
                stale = [p for p in mine if p.notification.event == "repeat"]
                superseded.extend(stale)
                kept = [p for p in kept if p not in stale]
            kept.append(Pending(channel, note))
    for channel in configured:
        mine = [p for p in kept if p.channel == channel]
        if len(mine) > cap:
            over = mine[: len(mine) - cap]
            dropped.extend(over)
            kept = [p for p in kept if p not in over]
    return tuple(kept), tuple(dropped), tuple(superseded)


def record(state: AlertState, delivered: Iterable[tuple[str, str]], failed: Mapping[tuple[str, str], str]) -> AlertState:
    """The state after sending: delivered entries leave the queue, failed ones count a try."""
    done = set(delivered)
    pending = []
    for entry in state.pending:
        if entry.key in done:
            continue
        if entry.key in failed:
            entry = replace(entry, attempts=entry.attempts + 1, last_error=_one_line(failed[entry.key], 300))
        pending.append(entry)
    return replace(state, pending=tuple(pending))
