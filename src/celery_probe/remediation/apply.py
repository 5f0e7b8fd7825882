"""One run's remediation: lock, read the state, decide, save, unlock, act, record.

The decision is stored *before* the command runs, and the lock is released before it
runs: an overlapping run (a slow one and the next cron tick) waits only for the few
milliseconds of read-decide-write, then sees that an action was taken and does not take
another; a run killed while its command runs has still used up its turn, so the command
is not repeated at once. Every action, and every dry-run "would run", is one line of
``history.jsonl`` with ``"event": "remediation"``.

Nothing here raises: remediation must not turn a verdict into a traceback, nor change the
run's exit code, which answers "is Celery healthy".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from celery_probe.alerting.statefile import LockBusy, load_state, locked
from celery_probe.config.durations import format_duration
from celery_probe.remediation.command import CommandResult, command_environment, run_command
from celery_probe.remediation.policy import Decision, Policy, State, decide
from celery_probe.storage.reports import HISTORY, append_line, atomic_write_json
from celery_probe.config.settings import Settings
from celery_probe.config.urls import scrub

STATE_FILE = "remediation.json"
LOCK_TIMEOUT = 5.0
MAX_STATE_BYTES = 100_000
PREFIX = "celery-probe: on-down"


@dataclass
class Outcome:
    """What this run did, for the caller's output line and for tests."""

    line: str | None
    decision: Decision | None = None
    result: CommandResult | None = None


def policy_of(settings: Settings) -> Policy:
    return Policy(settings.on_down, settings.on_down_after, settings.on_down_every,
                  settings.on_down_dry_run, settings.on_down_codes)


def reason_codes(verdict: Mapping[str, Any]) -> list[str]:
    """The verdict's non-informational reason codes, in its order, each once."""
    codes = [str(r.get("code")) for r in verdict.get("reasons") or []
             if isinstance(r, Mapping) and r.get("severity") != "info" and r.get("code")]
    return list(dict.fromkeys(codes))


def remediate(settings: Settings, verdict: Mapping[str, Any], secrets: Iterable[str] = (), *,
              now: datetime | None = None) -> Outcome:
    """Act on ``verdict`` as ``settings.on_down*`` say; a no-op without ``--on-down``."""
    if not settings.on_down:
        return Outcome(None)
    secrets = list(secrets)
    try:
        return _remediate(settings, verdict, secrets, now or datetime.now(timezone.utc))
    except Exception as exc:  # last guard: report in one line, keep the verdict's exit code
        return Outcome(str(scrub(f"{PREFIX}: warning: remediation failed: {type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:300]}", secrets)))


def _remediate(settings: Settings, verdict: Mapping[str, Any], secrets: list[str], now: datetime) -> Outcome:
    policy = policy_of(settings)
    status = str(verdict.get("status", "unknown"))
    codes = reason_codes(verdict)
    path = settings.report_dir / STATE_FILE
    warnings: list[str] = []
    try:
        with locked(path, LOCK_TIMEOUT):
            previous, problem = load_state(path, State.from_dict, MAX_STATE_BYTES)
            if problem:  # a damaged file is set aside as .corrupt and the streak starts afresh
                warnings.append(problem)
            decision = decide(previous, status, codes, now, policy)
            try:
                atomic_write_json(path, decision.state.to_dict())
            except OSError as exc:
                warnings.append(f"cannot write {path}: {exc.strerror or exc}")
                if decision.act:  # without a record, every run would act: do not act at all
                    return Outcome(_join(warnings, f"{PREFIX}: not run: its state cannot be saved"), decision)
    except LockBusy as exc:
        return Outcome(f"{PREFIX}: skipped: {exc} (an overlapping run); the next run decides")
    if not decision.act:
        return Outcome(_join(warnings, f"{PREFIX}: {decision.why}" if decision.why else None), decision)
    shown = " ".join(str(part) for part in scrub(list(policy.command), secrets))
    down_since = decision.state.down_since or now
    if policy.dry_run:
        result = None
        line = f"{PREFIX}: would run {shown} (dry run; down for {format_duration((now - down_since).total_seconds())})"
    else:
        env = command_environment({
            "CELERY_PROBE_STATUS": status,
            "CELERY_PROBE_CODES": ",".join(codes),
            "CELERY_PROBE_DOWN_SINCE": down_since.isoformat(),
        })
        result = run_command(policy.command, env=env, timeout=settings.on_down_timeout, secrets=secrets)
        line = f"{PREFIX}: ran {shown}: {_ended(result)}"
    entry = history_line(policy, secrets, now=now, down_since=down_since, status=status, codes=codes, result=result)
    try:
        append_line(settings.report_dir / HISTORY, entry)
    except OSError as exc:
        warnings.append(f"cannot record the action in {settings.report_dir / HISTORY}: {exc.strerror or exc}")
    return Outcome(_join(warnings, line), decision, result)


def history_line(policy: Policy, secrets: Iterable[str], *, now: datetime, down_since: datetime, status: str,
                 codes: list[str], result: CommandResult | None) -> dict[str, Any]:
    """The ``history.jsonl`` line of one action (``result`` None: a dry run)."""
    entry: dict[str, Any] = {
        "event": "remediation",
        "at": now.isoformat(),
        "command": list(policy.command),
        "dry_run": result is None,
        "exit_code": result.exit_code if result else None,
        "duration_s": result.duration_s if result else 0.0,
        "timed_out": result.timed_out if result else False,
        "output_tail": result.output_tail if result else "",
        "error": result.error if result else None,
        "down_since": down_since.isoformat(),
        "status": status,
        "codes": codes,
        # A one-word summary for readers that show actions without knowing this format.
        "outcome": _outcome(result),
    }
    return scrub(entry, secrets)  # type: ignore[no-any-return]


def _outcome(result: CommandResult | None) -> str:
    if result is None:
        return "would run"
    if result.timed_out:
        return "timed out"
    return "did not start" if result.exit_code is None else f"exit {result.exit_code}"


def _ended(result: CommandResult) -> str:
    took = format_duration(result.duration_s)
    if result.timed_out:
        return f"{result.error} (process group killed)"
    if result.exit_code is None:
        return result.error or "did not start"
    return f"exit {result.exit_code} after {took}"


def _join(warnings: list[str], line: str | None) -> str | None:
    parts = [f"{PREFIX}: warning: {w}" for w in warnings] + ([line] if line else [])
    return "\n".join(parts) if parts else None
