"""The alert decision: a pure function of (previous state, verdict, now, policy). No I/O here."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from celery_probe.alerting.state import (
    AlertState,
    Notification,
    Pending,
    Policy,
    decide,
    record,
    summarize_verdict,
)

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc)
MAIL = "email:ops@example.com"
HOOK = "webhook:generic:abc"


def verdict(status: str, **extra):
    return {"status": status, "worker_alive": status == "healthy", "reasons": [], **extra}


class Runs:
    """Feeds statuses through decide() like cron would, every ``step`` seconds; all delivered."""

    def __init__(self, policy: Policy | None = None, channels=(MAIL,), step: float = 60):
        self.policy = policy or Policy()
        self.channels, self.step = list(channels), step
        self.state: AlertState | None = None
        self.now = T0
        self.sent: list[Notification] = []

    def run(self, status: str, *, deliver: bool = True, **extra) -> Notification | None:
        decision = decide(self.state, summarize_verdict(verdict(status, **extra)), self.now, self.policy, self.channels)
        # Round-trip through JSON as the state file does, so (de)serialisation is always exercised.
        state = AlertState.from_dict(json.loads(json.dumps(decision.state.to_dict())))
        if deliver:
            self.sent.extend(p.notification for p in decision.deliveries if p.channel == self.channels[0])
            state = record(state, [p.key for p in decision.deliveries], {})
        self.state = state
        self.now += timedelta(seconds=self.step)
        return decision.notification

    def events(self) -> list[tuple[str, str]]:
        return [(n.event, n.status) for n in self.sent]


class TestChangesOfState:
    def test_healthy_runs_send_nothing(self):
        runs = Runs()
        for _ in range(5):
            assert runs.run("healthy") is None
        assert runs.sent == []

    def test_one_alert_per_change_and_a_recovery(self):
        runs = Runs(Policy(repeat_every=0))
        for status in ["healthy", "down", "down", "down", "healthy", "healthy"]:
            runs.run(status)
        assert runs.events() == [("problem", "down"), ("recovery", "healthy")]
        problem, recovery = runs.sent
        assert problem.previous_status == "healthy"
        assert recovery.previous_status == "down"
        assert recovery.since == problem.since == problem.created_at

    def test_first_run_ever_down_alerts_without_a_previous_status(self):
        runs = Runs()
        runs.run("down")
        assert runs.events() == [("problem", "down")]
        assert runs.sent[0].previous_status is None

    def test_degraded_then_down_is_a_change(self):
        runs = Runs(Policy(repeat_every=0))
        for status in ["healthy", "degraded", "down", "down", "degraded", "healthy"]:
            runs.run(status)
        assert runs.events() == [("problem", "degraded"), ("change", "down"), ("change", "degraded"),
                                 ("recovery", "healthy")]
        assert runs.sent[1].previous_status == "degraded"
        assert runs.sent[3].previous_status == "degraded"

    def test_unknown_is_a_problem_too(self):
        runs = Runs()
        runs.run("unknown")
        assert runs.events() == [("problem", "unknown")]

    def test_unexpected_status_counts_as_unknown(self):
        runs = Runs()
        runs.run("on fire")
        assert runs.events() == [("problem", "unknown")]


class TestRepeat:
    def test_repeats_at_the_interval_while_still_down(self):
        runs = Runs(Policy(repeat_every=600), step=60)
        runs.run("down")
        for _ in range(25):
            runs.run("down")
        events = runs.events()
        assert events[0] == ("problem", "down")
        assert events[1:] == [("repeat", "down")] * 2  # at +600 s and +1200 s
        times = [n.created_at for n in runs.sent]
        gaps = [(datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
                for a, b in zip(times, times[1:])]
        assert gaps == [600, 600]

    def test_zero_never_repeats(self):
        runs = Runs(Policy(repeat_every=0))
        for _ in range(50):
            runs.run("down")
        assert runs.events() == [("problem", "down")]

    def test_clock_going_back_restarts_the_interval(self):
        runs = Runs(Policy(repeat_every=600))
        runs.run("down")
        runs.now = T0 - timedelta(days=1)
        assert runs.run("down") is None
        runs.now = T0 - timedelta(days=1) + timedelta(seconds=599)
        assert runs.run("down") is None
        runs.now = T0 - timedelta(days=1) + timedelta(seconds=601)
        assert runs.run("down").event == "repeat"

    def test_a_change_restarts_the_interval(self):
        runs = Runs(Policy(repeat_every=300), step=200)
        runs.run("down")        # t=0 problem
        runs.run("degraded")    # t=200 change
        runs.run("degraded")    # t=400: 200 s since the change, no repeat
        runs.run("degraded")    # t=600: 400 s since the change, repeat
        assert runs.events() == [("problem", "down"), ("change", "degraded"), ("repeat", "degraded")]


class TestFlapSuppression:
    def test_needs_n_consecutive_failures(self):
        runs = Runs(Policy(min_failures=3, repeat_every=0))
        for status in ["healthy", "down", "healthy", "down", "down", "healthy", "down", "down", "down", "down"]:
            runs.run(status)
        assert runs.events() == [("problem", "down")]
        assert runs.sent[0].previous_status == "healthy"
        # since: the first of the three consecutive failures, not the alert's run
        assert runs.sent[0].since == (T0 + timedelta(seconds=6 * 60)).isoformat(timespec="microseconds")

    def test_no_recovery_for_a_suppressed_blip(self):
        runs = Runs(Policy(min_failures=2))
        for status in ["healthy", "down", "healthy", "healthy"]:
            runs.run(status)
        assert runs.sent == []

    def test_streak_may_mix_non_healthy_statuses(self):
        runs = Runs(Policy(min_failures=2, repeat_every=0))
        runs.run("degraded")
        runs.run("down")
        assert runs.events() == [("problem", "down")]

    def test_a_change_must_also_last_n_runs(self):
        runs = Runs(Policy(min_failures=2, repeat_every=0))
        for status in ["down", "down", "unknown", "down", "unknown", "unknown"]:
            runs.run(status)
        assert runs.events() == [("problem", "down"), ("change", "unknown")]


class TestStateless:
    """Without a state file, decide(None, ...) alerts every non-healthy run, never recovers."""

    @pytest.mark.parametrize("status", ["down", "degraded", "unknown"])
    def test_every_non_healthy_run_alerts(self, status):
        decision = decide(None, summarize_verdict(verdict(status)), T0, Policy(), [MAIL, HOOK])
        assert decision.notification.event == "problem"
        assert [p.channel for p in decision.deliveries] == [MAIL, HOOK]

    def test_healthy_sends_nothing(self):
        decision = decide(None, summarize_verdict(verdict("healthy")), T0, Policy(), [MAIL])
        assert decision.notification is None and decision.deliveries == ()


class TestPendingQueue:
    def test_failed_delivery_stays_and_is_retried_first(self):
        summary = summarize_verdict(verdict("down"))
        first = decide(None, summary, T0, Policy(repeat_every=0), [MAIL, HOOK])
        mail_entry, hook_entry = first.deliveries
        state = record(first.state, [hook_entry.key], {mail_entry.key: "SMTP: connection refused"})
        assert [(p.channel, p.attempts, p.last_error) for p in state.pending] == [
            (MAIL, 1, "SMTP: connection refused")]
        second = decide(state, summary, T0 + timedelta(minutes=5), Policy(repeat_every=0), [MAIL, HOOK])
        assert second.notification is None
        assert [p.key for p in second.deliveries] == [mail_entry.key]
        assert second.deliveries[0].notification == mail_entry.notification

    def test_order_kept_problem_before_recovery(self):
        policy = Policy(repeat_every=0)
        first = decide(None, summarize_verdict(verdict("down")), T0, policy, [MAIL])
        state = record(first.state, [], {first.deliveries[0].key: "refused"})
        second = decide(state, summarize_verdict(verdict("healthy")), T0 + timedelta(minutes=5), policy, [MAIL])
        assert [p.notification.event for p in second.deliveries] == ["problem", "recovery"]

    def test_pending_repeat_is_superseded_not_piled_up(self):
        policy = Policy(repeat_every=60)
        state = None
        now = T0
        for _ in range(10):  # the mail channel is down all along: nothing is ever delivered
            decision = decide(state, summarize_verdict(verdict("down")), now, policy, [MAIL])
            state = record(decision.state, [], {p.key: "refused" for p in decision.deliveries})
            now += timedelta(seconds=61)
        # the first alert, and no reminder: the undelivered alert already says "down"
        assert [p.notification.event for p in state.pending] == ["problem"]

    def test_a_newer_alert_replaces_a_pending_reminder(self):
        policy = Policy(repeat_every=60)
        first = decide(None, summarize_verdict(verdict("down")), T0, policy, [MAIL])
        state = record(first.state, [first.deliveries[0].key], {})  # the problem alert got through
        second = decide(state, summarize_verdict(verdict("down")), T0 + timedelta(seconds=61), policy, [MAIL])
        assert second.notification.event == "repeat"
        state = record(second.state, [], {second.deliveries[0].key: "refused"})
        third = decide(state, summarize_verdict(verdict("healthy")), T0 + timedelta(seconds=122), policy, [MAIL])
        assert [p.notification.event for p in third.deliveries] == ["recovery"]
        assert [p.notification.event for p in third.superseded] == ["repeat"]
        assert third.dropped == ()

    def test_queue_is_capped_and_the_overflow_reported(self):
        policy = Policy(repeat_every=0, max_pending=3)
        state = None
        now = T0
        for status in ["down", "healthy"] * 4:
            decision = decide(state, summarize_verdict(verdict(status)), now, policy, [MAIL])
            state = record(decision.state, [], {p.key: "refused" for p in decision.deliveries})
            now += timedelta(minutes=1)
        assert len(state.pending) == 3
        assert len(decision.dropped) == 1

    def test_channel_no_longer_configured_is_dropped_and_reported(self):
        first = decide(None, summarize_verdict(verdict("down")), T0, Policy(), [MAIL, HOOK])
        state = record(first.state, [], {p.key: "x" for p in first.deliveries})
        second = decide(state, summarize_verdict(verdict("down")), T0, Policy(), [HOOK])
        assert [p.channel for p in second.dropped] == [MAIL]
        assert [p.channel for p in second.deliveries] == [HOOK]

    def test_notification_id_is_stable_across_serialisation(self):
        decision = decide(None, summarize_verdict(verdict("down")), T0, Policy(), [MAIL])
        entry = decision.deliveries[0]
        again = Pending.from_dict(json.loads(json.dumps(entry.to_dict())))
        assert again.notification.id == entry.notification.id and again.key == entry.key


class TestSummary:
    def test_credentials_are_scrubbed(self):
        raw = verdict("down", target="app proj on redis://:hunter22@redis:6379/0",
                      reasons=[{"code": "celery_broker_unreachable", "severity": "critical",
                                "message": "cannot connect to amqp://guest:hunter22@rabbit//"}])
        summary = summarize_verdict(raw, {"tok-secret-123"})
        text = json.dumps(summary)
        assert "hunter22" not in text
        assert "redis://:***@redis:6379/0" in text

    def test_known_secrets_are_scrubbed_anywhere(self):
        raw = verdict("down", reasons=[{"code": "x", "severity": "critical", "message": "token tok-secret-123 refused"}])
        assert "tok-secret-123" not in json.dumps(summarize_verdict(raw, {"tok-secret-123"}))

    def test_hostile_shapes_are_tamed(self):
        raw = {"status": ["down"], "worker_alive": "yes", "queue_length": "12", "active_tasks": True,
               "reasons": ["plain text reason", {"code": "c\r\nBcc: x@y", "message": "a\nb"}, 7],
               "target": {"not": "a string"}}
        summary = summarize_verdict(raw)
        assert summary["status"] == "unknown"
        assert summary["worker_alive"] is None and summary["queue_length"] is None and summary["active_tasks"] is None
        assert summary["target"] is None
        assert [r["code"] for r in summary["reasons"]] == ["unspecified", "c Bcc: x@y"]
        assert summary["reasons"][1]["message"] == "a b"

    def test_seed_shape_is_enough(self):
        seed = {"worker_alive": False, "active_tasks": None, "scheduled_tasks": None, "queue_length": 4,
                "last_heartbeat": None, "status": "down"}
        summary = summarize_verdict(seed, source="http://app/health")
        assert summary["status"] == "down" and summary["queue_length"] == 4
        assert summary["target"] == summary["source"] == "http://app/health"


class TestStoredState:
    def test_rejects_foreign_documents(self):
        for bad in ([], {"version": 2}, {"version": 1, "pending": "x"},
                    {"version": 1, "pending": [{"channel": "c", "notification": {"event": "boom"}}]}):
            with pytest.raises(ValueError):
                AlertState.from_dict(bad)

    def test_tolerates_odd_counters(self):
        state = AlertState.from_dict({"version": 1, "status": "down", "streak": -3, "status_runs": "x"})
        assert state.streak == 0 and state.status_runs == 0 and state.status == "down"


STATUS = st.sampled_from(["healthy", "degraded", "down", "unknown"])


class TestProperties:
    @settings(max_examples=300, deadline=None)
    @given(st.lists(STATUS, max_size=40), st.integers(1, 4))
    def test_alerts_only_after_min_failures_and_always_recover(self, statuses, n):
        runs = Runs(Policy(min_failures=n, repeat_every=0))
        for status in statuses:
            runs.run(status)
        events = runs.events()
        # Streaks of at least n non-healthy runs, each opens exactly one problem.
        streaks, current = [], 0
        for status in statuses + ["healthy"]:
            if status == "healthy":
                if current:
                    streaks.append(current)
                current = 0
            else:
                current += 1
        assert len([e for e in events if e[0] == "problem"]) == len([s for s in streaks if s >= n])
        # Problems and recoveries alternate, starting with a problem.
        opened = [e for e in events if e[0] in ("problem", "recovery")]
        assert all(e[0] == ("problem" if i % 2 == 0 else "recovery") for i, e in enumerate(opened))
        # If the last run was healthy, no problem is left open.
        if statuses and statuses[-1] == "healthy":
            assert runs.state.alerted is None

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(STATUS, st.booleans()), max_size=30))
    def test_nothing_is_lost_when_deliveries_fail(self, script):
        """Every notification decided is eventually delivered once the channel works again."""
        policy = Policy(repeat_every=0, max_pending=1000)
        state, now = None, T0
        decided, delivered = [], []
        for status, works in script + [("healthy", True)]:
            decision = decide(state, summarize_verdict(verdict(status)), now, policy, [MAIL])
            if decision.notification is not None:
                decided.append(decision.notification.id)
            if works:
                delivered.extend(p.notification.id for p in decision.deliveries)
                state = record(decision.state, [p.key for p in decision.deliveries], {})
            else:
                state = record(decision.state, [], {p.key: "down" for p in decision.deliveries})
            now += timedelta(minutes=1)
        assert delivered == decided  # all of them, once each, in order
        assert state.pending == ()
