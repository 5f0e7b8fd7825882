"""Sending the alerts one run has decided: lock, read, decide, send, write, unlock.

This is the only module that combines the pieces with side effects. Its promises:

* **never silently dropped**: the decision is stored (every delivery pending) *before*
  anything is sent, and a delivery leaves the queue only when its channel accepted it; a
  run killed mid-send retries on the next run (so delivery is at least once: mails keep
  their Message-ID and webhooks carry ``id`` and an ``Idempotency-Key`` header so a
  receiver can drop the rare duplicate);
* **in order per channel**: after a channel fails, its later alerts wait, so nobody gets
  a recovery notice before the problem it ends;
* **never twice for overlapping runs**: read-decide-send-write happens under the state
  file's lock; a run that cannot get it within ``--lock-timeout`` skips alerting and says so;
* **the health exit code is kept**: failures are one warning line on stderr, because the
  exit code answers "is Celery healthy", which an SMTP outage does not change;
* **no traceback, no credential**: every line printed goes through ``scrub``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import click

from celery_probe.alerting.channel import Channel, DeliveryError
from celery_probe.alerting.config import AlertConfig
from celery_probe.alerting.state import Decision, Pending, decide, record, summarize_verdict
from celery_probe.alerting.statefile import LockBusy, load_state, locked, save_state
from celery_probe.alerting.template import subject
from celery_probe.config.urls import scrub

PREFIX = "celery-probe"


@dataclass
class Outcome:
    """What happened, for the caller and for tests."""

    decision: Decision | None = None
    delivered: list[Pending] = field(default_factory=list)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    skipped: str | None = None


def _stderr(line: str) -> None:
    click.echo(line, err=True)


def send_alerts(
    verdict: Mapping[str, Any],
    config: AlertConfig | None,
    *,
    source: str | None = None,
    now: datetime | None = None,
    say: Callable[[str], None] = _stderr,
) -> Outcome | None:
    """Alert about ``verdict`` as ``config`` says; print what happened in one-line notices."""
    if config is None or not config.channels:
        return None

    def notice(line: str) -> None:
        say(str(scrub(line, config.secrets)))

    try:
        return _send(verdict, config, source=source, now=now or datetime.now(timezone.utc), notice=notice)
    except Exception as exc:  # last guard: alerting must never turn a verdict into a traceback
        notice(f"{PREFIX}: warning: alerting failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        return Outcome(skipped="error")


def _send(verdict: Mapping[str, Any], config: AlertConfig, *, source: str | None, now: datetime,
          notice: Callable[[str], None]) -> Outcome:
    summary = summarize_verdict(verdict, config.secrets, source=source)
    channels = {c.id: c for c in config.channels}
    path = config.state_file
    if path is None:
        decision = decide(None, summary, now, config.policy, list(channels))
        outcome = _deliver(decision, channels)
        _report(outcome, channels, notice, kept_in="")
        return outcome
    try:
        with locked(path, config.lock_timeout):
            previous, problem = load_state(path)
            if problem:
                notice(f"{PREFIX}: warning: {problem}")
            decision = decide(previous, summary, now, config.policy, list(channels))
            stored = _save(path, decision.state, notice)
            outcome = _deliver(decision, channels) if decision.deliveries else Outcome(decision)
            if decision.deliveries:
                final = record(decision.state, (p.key for p in outcome.delivered), outcome.failed)
                stored = _save(path, final, notice) and stored
            _report(outcome, channels, notice, kept_in=str(path) if stored else None)
            return outcome
    except LockBusy as exc:
        notice(f"{PREFIX}: notice: {exc} (a slow earlier run?): alerting skipped this time, "
               f"the next run will catch up")
        return Outcome(skipped="locked")


def _save(path: Any, state: Any, notice: Callable[[str], None]) -> bool:
    try:
        save_state(path, state)
        return True
    except OSError as exc:
        notice(f"{PREFIX}: warning: cannot write state file {path}: {exc.strerror or exc}; "
               "alerts may be repeated or not retried")
        return False


def _deliver(decision: Decision, channels: Mapping[str, Channel]) -> Outcome:
    outcome = Outcome(decision)
    blocked: set[str] = set()
    for entry in decision.deliveries:
        if entry.channel in blocked:
            continue  # keep this channel's order: its earlier alert failed
        channel = channels[entry.channel]
        try:
            channel.send(entry.notification)
        except DeliveryError as exc:
            outcome.failed[entry.key] = str(exc)
            blocked.add(entry.channel)
        else:
            outcome.delivered.append(entry)
    return outcome


def _report(outcome: Outcome, channels: Mapping[str, Channel], notice: Callable[[str], None],
            *, kept_in: str | None) -> None:
    decision = outcome.decision
    assert decision is not None
    if outcome.delivered:
        by_title: dict[str, list[str]] = {}
        for entry in outcome.delivered:
            by_title.setdefault(subject(entry.notification), []).append(channels[entry.channel].display)
        parts = [f"{title} to {', '.join(dict.fromkeys(names))}" for title, names in by_title.items()]
        notice(f"{PREFIX}: alert sent: {'; '.join(parts)}")
    if outcome.failed:
        failures = "; ".join(f"{channels[channel].display} ({why})" for (channel, _id), why in outcome.failed.items())
        waiting = len([p for p in decision.deliveries if p.key not in {d.key for d in outcome.delivered}])
        if kept_in == "":
            tail = "not retried: there is no --state-file"
        elif kept_in is None:
            tail = "and the state file could not be written, so it may not be retried"
        else:
            tail = f"{waiting} alert(s) kept in {kept_in}, retried on the next run"
        notice(f"{PREFIX}: warning: alert not delivered: {failures}; {tail}")
    if decision.dropped:
        names = sorted({p.channel for p in decision.dropped})
        notice(f"{PREFIX}: warning: {len(decision.dropped)} undelivered alert(s) given up "
               f"(channel no longer configured or queue full): {', '.join(names)}")

