"""When to run the ``--on-down`` command: a pure function of (state, verdict, now, policy).

No I/O and no clock, so every rule is unit-tested without a process, a file or a sleep:

* a **down streak** starts at the first ``down`` verdict and ends at any other status
  (``unknown`` included: it means the evidence is missing, not that Celery is down);
* the command runs once the streak has lasted ``after`` seconds, and at most once every
  ``every`` seconds (a dry run keeps its own clock, so trying it never delays a real action);
* with no ``codes`` given, a verdict that names ``celery_broker_unreachable`` does not
  trigger it: restarting workers cannot bring a broker back, and workers started while the
  broker is away only add to the reconnection storm when it returns. With ``codes``, the
  verdict must carry at least one of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from celery_probe.config.durations import format_duration

BROKER_UNREACHABLE = "celery_broker_unreachable"
STATE_VERSION = 1


@dataclass(frozen=True)
class Policy:
    """The operator's choice, from :class:`~celery_probe.config.settings.Settings`."""

    command: tuple[str, ...]
    after: float = 300.0
    every: float = 1800.0
    dry_run: bool = False
    codes: tuple[str, ...] = ()


@dataclass(frozen=True)
class State:
    """What the next run needs to remember; kept in ``REPORT_DIR/remediation.json``."""

    down_since: datetime | None = None
    last_action_at: datetime | None = None
    last_dry_run_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {"version": STATE_VERSION, "down_since": iso(self.down_since),
                "last_action_at": iso(self.last_action_at), "last_dry_run_at": iso(self.last_dry_run_at)}

    @classmethod
    def from_dict(cls, data: Any) -> State:
        """Raises ValueError for anything that is not a state this version wrote."""
        if not isinstance(data, Mapping) or data.get("version") != STATE_VERSION:
            raise ValueError("not a remediation state of version 1")

        def moment(key: str) -> datetime | None:
            value = data.get(key)
            if value is None:
                return None
            if not isinstance(value, str):
                raise ValueError(f"{key} is not a time")
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is None:
                raise ValueError(f"{key} has no time zone")
            return parsed

        return cls(moment("down_since"), moment("last_action_at"), moment("last_dry_run_at"))


@dataclass(frozen=True)
class Decision:
    """The new state to store, whether to act, and one line saying why (None: nothing to say)."""

    state: State
    act: bool
    why: str | None


def triggering(codes: Sequence[str], policy: Policy) -> str | None:
    """None when ``codes`` may trigger the command, else why not (for the output line)."""
    if policy.codes:
        if not set(codes) & set(policy.codes):
            return f"none of its reasons ({', '.join(codes) or 'none'}) is in --on-down-codes"
        return None
    if BROKER_UNREACHABLE in codes:
        return f"{BROKER_UNREACHABLE}: a worker restart cannot help while the broker does not answer"
    return None


def decide(state: State | None, status: str, codes: Sequence[str], now: datetime, policy: Policy) -> Decision:
    """Whether this run acts, and the state the next run starts from."""
    state = state or State()
    if status != "down":
        return Decision(replace(state, down_since=None), False, None)
    since = state.down_since if state.down_since and state.down_since <= now else now
    state = replace(state, down_since=since)
    refused = triggering(codes, policy)
    if refused:
        return Decision(state, False, f"not run: {refused}")
    lasted = (now - since).total_seconds()
    if lasted < policy.after:
        return Decision(state, False, f"not yet: down for {format_duration(lasted)} of {format_duration(policy.after)}")
    last = state.last_dry_run_at if policy.dry_run else state.last_action_at
    if last is not None:
        ago = (now - last).total_seconds()
        if 0 <= ago < policy.every:  # a last action "in the future" means the clock moved back
            return Decision(state, False, f"not run: last action {format_duration(ago)} ago; "
                                          f"next allowed in {format_duration(policy.every - ago)}")
    acted = replace(state, last_dry_run_at=now) if policy.dry_run else replace(state, last_action_at=now)
    return Decision(acted, True, None)
