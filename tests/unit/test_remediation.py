"""Auto-remediation's rules: durations, the pure policy, its settings and its state file."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from celery_probe.config.durations import format_duration, parse_duration
from celery_probe.config.settings import resolve_settings
from celery_probe.errors import ProbeUsageError
from celery_probe.pytest_plugin.session_state import ProbeSession
from celery_probe.remediation.apply import history_line, remediate
from celery_probe.remediation.policy import Policy, State, decide
from celery_probe.run.child import check_round_trip, child_command, child_environment

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc)
PY = sys.executable


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# ----------------------------------------------------------------------------- pure rules


class TestDurations:
    """One spelling of durations: 250ms, 90s, 5m, 1.5h, 2d, or a bare number of seconds."""

    @pytest.mark.parametrize(("raw", "seconds"), [
        ("250ms", 0.25), ("90s", 90), ("5m", 300), ("1.5h", 5400), ("2d", 172800), ("0s", 0),
        ("7", 7), (7, 7), (0.5, 0.5), (" 5 M ", 300),
    ])
    def test_parses(self, raw, seconds):
        assert parse_duration(raw) == seconds

    @pytest.mark.parametrize("raw", ["", "5x", "m", "-1s", "1e3s", "nan", "inf", "5 m s", True, None, [5]])
    def test_refuses(self, raw):
        with pytest.raises(ValueError, match="duration like"):
            parse_duration(raw)

    def test_formats_to_what_matters(self):
        assert [format_duration(s) for s in (0.25, 0, 5, 12.4, 120, 150, 1200, 3900, 90000)] == [
            "250ms", "0s", "5s", "12s", "2m", "2m 30s", "20m", "1h 5m", "1d 1h"]


class TestPolicy:
    """When the command runs: a pure function of (state, status, codes, now, policy)."""

    policy = Policy(("restart",), after=300, every=1800)

    def test_streak_starts_at_first_down_and_waits_for_after(self):
        first = decide(None, "down", ["celery_worker_down"], at(0), self.policy)
        assert not first.act and first.state.down_since == T0 and first.why == "not yet: down for 0s of 5m"
        second = decide(first.state, "down", ["celery_worker_down"], at(120), self.policy)
        assert not second.act and second.why == "not yet: down for 2m of 5m"
        third = decide(second.state, "down", ["celery_worker_down"], at(300), self.policy)
        assert third.act and third.state.last_action_at == at(300) and third.state.down_since == T0

    def test_at_most_once_per_every(self):
        state = State(down_since=T0, last_action_at=at(300))
        later = decide(state, "down", ["celery_worker_down"], at(900), self.policy)
        assert not later.act and later.why == "not run: last action 10m ago; next allowed in 20m"
        assert decide(state, "down", ["celery_worker_down"], at(2100), self.policy).act

    @pytest.mark.parametrize("status", ["healthy", "degraded", "unknown"])
    def test_any_other_status_ends_the_streak_and_keeps_the_rate_limit(self, status):
        state = State(down_since=T0, last_action_at=at(300))
        decision = decide(state, status, [], at(400), self.policy)
        assert not decision.act and decision.why is None
        assert decision.state == State(down_since=None, last_action_at=at(300))
        again = decide(decision.state, "down", ["celery_worker_down"], at(500), self.policy)
        assert again.state.down_since == at(500) and not again.act

    def test_broker_unreachable_does_not_trigger_by_default(self):
        state = State(down_since=T0)
        decision = decide(state, "down", ["celery_broker_unreachable", "celery_worker_down"], at(600), self.policy)
        assert not decision.act and "celery_broker_unreachable" in decision.why
        assert decision.state.down_since == T0  # still down: the streak goes on

    def test_codes_restrict_what_triggers(self):
        policy = Policy(("restart",), after=0, every=0, codes=("celery_roundtrip_failed",))
        assert not decide(None, "down", ["celery_worker_down"], T0, policy).act
        assert decide(None, "down", ["celery_worker_down", "celery_roundtrip_failed"], T0, policy).act
        broker = Policy(("restart-broker",), after=0, every=0, codes=("celery_broker_unreachable",))
        assert decide(None, "down", ["celery_broker_unreachable"], T0, broker).act

    def test_dry_run_keeps_its_own_clock(self):
        dry = Policy(("restart",), after=0, every=1800, dry_run=True)
        tried = decide(None, "down", ["celery_worker_down"], T0, dry)
        assert tried.act and tried.state.last_dry_run_at == T0 and tried.state.last_action_at is None
        assert not decide(tried.state, "down", ["celery_worker_down"], at(60), dry).act
        real = Policy(("restart",), after=0, every=1800)
        assert decide(tried.state, "down", ["celery_worker_down"], at(60), real).act

    def test_a_clock_moved_back_neither_blocks_nor_stretches(self):
        state = State(down_since=at(1000), last_action_at=at(1000))
        decision = decide(state, "down", ["celery_worker_down"], at(0), Policy(("x",), after=0, every=1800))
        assert decision.act and decision.state.down_since == at(0)

    def test_state_round_trips_and_refuses_foreign_documents(self):
        state = State(T0, at(5), None)
        assert State.from_dict(json.loads(json.dumps(state.to_dict()))) == state
        for bad in ({}, [], {"version": 2}, {"version": 1, "down_since": 5},
                    {"version": 1, "down_since": "2026-11-24T08:00:00"}, {"version": 1, "down_since": "nope"}):
            with pytest.raises(ValueError):
                State.from_dict(bad)

    def test_history_line_is_scrubbed(self):
        policy = Policy(("restart", "redis://:hunter22@h/0"), after=0, every=0)
        line = history_line(policy, {"hunter22"}, now=T0, down_since=T0, status="down",
                            codes=["celery_worker_down"], result=None)
        assert line["event"] == "remediation" and line["dry_run"] is True
        assert "hunter22" not in json.dumps(line)


    def test_run_secrets_cover_every_url_of_the_settings(self):
        settings = resolve_settings({"broker": "redis://:pw-broker@127.0.0.1:1/0",
                                     "backend": "redis://:pw-backend@127.0.0.1:1/1",
                                     "endpoints": ("https://u:pw-endpoint@example.test/health",),
                                     "flower_url": "http://admin:pw-flower@127.0.0.1:5555"},
                                    environ={}, pyproject=False)
        session = ProbeSession.one_target(settings, None, None)
        session.targets[""].measurements = SimpleNamespace(secrets={"pw-app"})  # type: ignore[assignment]
        assert session.secrets() >= {"pw-broker", "pw-backend", "pw-endpoint", "pw-flower", "pw-app"}


class TestSettings:
    """Flags, environment and pyproject.toml; every bad value is one line naming its source."""

    def test_pyproject_list_and_env_durations(self, tmp_path):
        (tmp_path / "pyproject.toml").write_text(
            f'[tool.celery-probe]\non-down = ["{PY}", "-c", "print(1)"]\non-down-after = "1.5m"\n'
            'on-down-dry-run = true\non-down-codes = ["celery_worker_down"]\n')
        settings = resolve_settings({}, environ={"CELERY_PROBE_ON_DOWN_EVERY": "2h"}, pyproject=tmp_path / "pyproject.toml")
        assert settings.on_down == (PY, "-c", "print(1)")
        assert (settings.on_down_after, settings.on_down_every, settings.on_down_timeout) == (90, 7200, 60)
        assert settings.on_down_dry_run is True and settings.on_down_codes == ("celery_worker_down",)

    @pytest.mark.parametrize(("name", "raw", "why"), [
        ("on_down", "no-such-restart-tool --all", "executable 'no-such-restart-tool' not found on PATH"),
        ("on_down", f"{__file__} --now", "is not an executable file"),
        ("on_down", "restart 'unclosed", "cannot be split"),
        ("on_down", '""', "is empty"),
        ("on_down_after", "5 minutes", "duration like"),
        ("on_down_every", "-1m", "duration like"),
        ("on_down_timeout", "0s", "between 0.1"),
        ("on_down_dry_run", "maybe", "true or false"),
    ])
    def test_bad_values(self, name, raw, why):
        with pytest.raises(ProbeUsageError, match=why) as caught:
            resolve_settings({}, environ={f"CELERY_PROBE_{name.upper()}": raw}, pyproject=False)
        assert f"(from environment variable CELERY_PROBE_{name.upper()})" in str(caught.value)

    def test_serve_children_never_get_it(self):
        """serve passes every setting to its child run but these, and the child gets --no-on-down."""
        settings = resolve_settings({"broker": "redis://127.0.0.1:1/0", "on_down": f"{PY} -c 'print(1, 2)'",
                                     "on_down_dry_run": "1"}, environ={}, pyproject=False)
        env = child_environment(settings, {})
        assert not [key for key in env if key.startswith("CELERY_PROBE_ON_DOWN")]
        assert "--no-on-down" in child_command(sys.executable, Path("reports"))
        check_round_trip(settings, {})  # does not refuse to start


class TestStateFile:
    """REPORT_DIR/remediation.json: a damaged one is set aside, the run goes on."""

    @pytest.mark.parametrize("content", ["{torn", '{"version": 2}', "[" * 100_000, "x" * 200_000])
    def test_a_damaged_state_is_moved_aside_with_one_warning(self, tmp_path, content):
        settings = resolve_settings({"broker": "redis://127.0.0.1:1/0", "report_dir": str(tmp_path),
                                     "on_down": f"{PY} -c pass", "on_down_after": "0s", "on_down_dry_run": "1"},
                                    environ={}, pyproject=False)
        (tmp_path / "remediation.json").write_text(content)
        verdict = {"status": "down", "reasons": [{"code": "celery_worker_down", "severity": "critical"}]}
        outcome = remediate(settings, verdict, now=T0)
        warning, line = outcome.line.splitlines()
        assert warning.startswith("celery-probe: on-down: warning: state file ") and "is damaged" in warning
        assert "starting afresh" in warning and "Traceback" not in outcome.line
        assert line.startswith("celery-probe: on-down: would run ")
        assert (tmp_path / "remediation.json.corrupt").read_text() == content
        stored = State.from_dict(json.loads((tmp_path / "remediation.json").read_text()))
        assert stored.down_since == T0 and stored.last_dry_run_at == T0
