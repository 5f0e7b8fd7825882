"""Auto-remediation (``run --on-down CMD``): real runs, real commands, a real worker brought back.

The rules of when to act are unit-tested on the pure policy; everything else runs
``celery-probe run`` as a process against a real broker, with real scripts as commands
(tests/apps/restart_worker.py starts a fresh worker, detached; hang_command.py hangs).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from celery_probe.config.durations import format_duration, parse_duration
from celery_probe.config.settings import REMEDIATION, resolve_settings
from celery_probe.errors import ProbeUsageError
from celery_probe.pytest_plugin.session_state import ProbeSession
from celery_probe.remediation.apply import history_line, remediate
from celery_probe.remediation.command import command_environment, run_command
from celery_probe.remediation.policy import Policy, State, decide
from celery_probe.run.child import check_round_trip, child_command, child_environment, probe_verdict
from celery_probe.testing import RedisServer, wait_until
from tests.support.environment import APPS

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc)
PY = sys.executable


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def command_line(*argv: str | Path) -> str:
    return shlex.join(str(a) for a in argv)


def history(folder: Path) -> tuple[list[dict], list[dict]]:
    """(run lines, remediation lines) of ``folder/history.jsonl``."""
    lines = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    return [x for x in lines if "event" not in x], [x for x in lines if x.get("event") == "remediation"]


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie of ours counts as gone once reaped
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:
        return False


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


class TestCommand:
    """The command itself: argv, environment, output tail, timeout."""

    def test_environment_drops_our_variables(self):
        env = command_environment({"CELERY_PROBE_STATUS": "down"},
                                  {"PATH": "/bin", "CELERY_PROBE_SMTP_PASSWORD": "x", "CELERY_PROBE_BROKER": "y"})
        assert env == {"PATH": "/bin", "CELERY_PROBE_STATUS": "down"}

    def test_output_tail_is_capped_and_scrubbed(self):
        script = "import sys\nfor i in range(5000): print('line', i)\nprint('amqp://u:pw-123456@h//', 'pw-123456', file=sys.stderr)\nsys.exit(3)"
        result = run_command([PY, "-c", script], env=dict(os.environ), timeout=20, secrets={"pw-123456"})
        assert result.exit_code == 3 and not result.timed_out
        assert "pw-123456" not in result.output_tail and "amqp://u:***@h//" in result.output_tail
        assert "line 4999" in result.output_tail and "line 4000" not in result.output_tail
        assert len(result.output_tail) <= 2000

    def test_missing_executable_is_an_error_not_an_exception(self, tmp_path):
        result = run_command([str(tmp_path / "gone")], env={}, timeout=5)
        assert result.exit_code is None and "cannot start" in (result.error or "")


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


# ----------------------------------------------------------------------------- real runs


def base_args(target, folder: Path, *extra: str) -> list[str]:
    return ["run", "-A", "probe_test_app", "--report-dir", str(folder), "--deadline", "4",
            "--ping-window", "0.2", *extra]


class TestRealRuns:
    """celery-probe run as cron runs it, with real commands; without a worker every run is down."""

    def test_brings_a_killed_worker_back_once(self, target, start_worker, cli, tmp_path):
        env = target.env()
        name = f"restarted-{os.getpid()}@%h"
        calls, pidfile, log = tmp_path / "calls.jsonl", tmp_path / "worker.pid", tmp_path / "worker.log"
        start_worker(env).kill()  # the worker dies; nothing restarts it but the command
        command = command_line(PY, APPS / "restart_worker.py", calls, pidfile, log,
                               name.replace("%h", "host"), target.default_queue, "3")
        args = base_args(target, tmp_path / "reports", "--on-down", command, "--on-down-after", "1s",
                         "--on-down-every", "10m", "--on-down-timeout", "20s", "--expect-workers", "1")
        try:
            first = cli(*args, env=env)
            assert first.code == 2 and "DOWN" in first.stdout, first.stdout + first.stderr
            assert "on-down: not yet: down for 0s of 1s" in first.stdout  # text format: on stdout
            assert not calls.exists()
            wait_until(lambda: time.time() >= os.path.getmtime(tmp_path / "reports" / "remediation.json") + 1.0,
                       timeout=5, what="the streak to last 1 s")
            second = cli(*args, env=env)
            assert second.code == 2, second.stdout + second.stderr  # the verdict's code, not the command's
            assert "on-down: ran " in second.stdout and "exit 0 after" in second.stdout
            # The worker starts 3 s after the command: these runs are still down, within the window.
            for _ in range(2):
                again = cli(*args, env=env)
                assert again.code == 2 and "on-down: not run: last action" in again.stdout, again.stdout
            healthy = wait_until(lambda: (r := cli(*args, env=env)).code == 0 and r, timeout=60, interval=0.5,
                                 what="a healthy run after the restart")
            assert "on-down" not in healthy.stdout
        finally:  # every worker the command started, even if a bug started several
            for pid in map(int, pidfile.read_text().split() if pidfile.exists() else []):
                try:
                    os.kill(pid, signal.SIGTERM)
                    wait_until(lambda pid=pid: pid_gone(pid), timeout=15, what="the restarted worker to stop")
                except ProcessLookupError:
                    pass
        recorded = [json.loads(line) for line in calls.read_text().splitlines()]
        assert len(recorded) == 1  # four down runs, one action
        assert recorded[0]["env"]["CELERY_PROBE_STATUS"] == "down"
        assert "celery_worker_down" in recorded[0]["env"]["CELERY_PROBE_CODES"].split(",")
        assert datetime.fromisoformat(recorded[0]["env"]["CELERY_PROBE_DOWN_SINCE"]).tzinfo is not None
        assert set(recorded[0]["env"]) == {"CELERY_PROBE_STATUS", "CELERY_PROBE_CODES", "CELERY_PROBE_DOWN_SINCE"}
        runs, actions = history(tmp_path / "reports")
        assert [r["status"] for r in runs][:4] == ["down"] * 4 and runs[-1]["status"] == "healthy"
        assert len(actions) == 1
        action = actions[0]
        assert action["dry_run"] is False and action["exit_code"] == 0 and action["timed_out"] is False
        assert action["outcome"] == "exit 0"
        assert action["command"][1].endswith("restart_worker.py") and "started worker" in action["output_tail"]
        state = json.loads((tmp_path / "reports" / "remediation.json").read_text())
        assert state["down_since"] is None and state["last_action_at"] == action["at"]

    def test_dry_run_runs_nothing_and_records_would_run(self, target, cli, tmp_path):
        marker = tmp_path / "ran"
        command = command_line(PY, "-c", f"open({str(marker)!r}, 'a').write('x')")
        args = base_args(target, tmp_path / "reports", "--format", "json", "--on-down", command,
                         "--on-down-after", "0s", "--on-down-every", "1h")
        env = target.env()
        first = cli(*args, "--on-down-dry-run", env=env)
        assert first.code == 2 and json.loads(first.stdout)["status"] == "down"  # stdout stays pure JSON
        assert "on-down: would run " in first.stderr and "(dry run" in first.stderr
        second = cli(*args, "--on-down-dry-run", env=env)
        assert "on-down: not run: last action" in second.stderr
        assert not marker.exists()
        _runs, actions = history(tmp_path / "reports")
        assert len(actions) == 1 and actions[0]["dry_run"] is True and actions[0]["exit_code"] is None
        assert actions[0]["outcome"] == "would run"
        real = cli(*args, env=env)  # trying it dry never delays the real thing
        assert "on-down: ran " in real.stderr and marker.read_text() == "x"

    def test_a_hanging_command_is_killed_at_its_timeout(self, target, cli, tmp_path):
        child_pidfile = tmp_path / "child.pid"
        args = base_args(target, tmp_path / "reports", "--format", "json", "--deadline", "3",
                         "--on-down", command_line(PY, APPS / "hang_command.py", child_pidfile),
                         "--on-down-after", "0s", "--on-down-timeout", "1s")
        result = cli(*args, env=target.env(), timeout=40)
        assert result.code == 2
        # deadline 3 s + timeout 1 s + SIGTERM grace 2 s + interpreter start-up and slack
        assert result.elapsed < 3 + 1 + 2 + 3, result.elapsed
        assert "killed after its 1s timeout (process group killed)" in result.stderr
        child = int(child_pidfile.read_text())
        wait_until(lambda: pid_gone(child), timeout=5, what="the command's child to be killed with its group")
        _runs, actions = history(tmp_path / "reports")
        assert actions[0]["timed_out"] is True and actions[0]["exit_code"] is None and actions[0]["outcome"] == "timed out"
        assert "hanging" in actions[0]["output_tail"]

    def test_broker_unreachable_triggers_nothing_by_default(self, cli, tmp_path):
        marker = tmp_path / "ran"
        args = ["run", "-b", "redis://127.0.0.1:1/0", "--report-dir", str(tmp_path / "reports"),
                "--on-down", command_line(PY, "-c", f"open({str(marker)!r}, 'w')"), "--on-down-after", "0s"]
        result = cli(*args)
        assert result.code == 2 and "on-down: not run: celery_broker_unreachable" in result.stdout
        assert not marker.exists()

    def test_no_on_down_switches_off_what_pyproject_asks(self, target, cli, tmp_path):
        marker = tmp_path / "ran"
        (tmp_path / "pyproject.toml").write_text(
            f'[tool.celery-probe]\non-down = ["{PY}", "-c", "open({str(marker)!r}, \'w\')"]\non-down-after = "0s"\n')
        result = cli(*base_args(target, tmp_path / "reports", "--no-on-down"), env=target.env())
        assert result.code == 2 and "on-down" not in result.stdout + result.stderr and not marker.exists()

    def test_get_celery_health_never_acts_on_what_pyproject_asks(self, cli, tmp_path, monkeypatch):
        marker = tmp_path / "ran"
        (tmp_path / "pyproject.toml").write_text(
            f'[tool.celery-probe]\non-down = ["{PY}", "-c", "open({str(marker)!r}, \'w\')"]\non-down-after = "0s"\n'
            'on-down-codes = ["celery_broker_unreachable"]\n')
        monkeypatch.chdir(tmp_path)
        verdict = probe_verdict(3, broker="redis://127.0.0.1:1/0")
        assert verdict["status"] == "down" and not marker.exists()
        # The same pyproject.toml does act from `celery-probe run`: the check above can fail.
        result = cli("run", "-b", "redis://127.0.0.1:1/0", "--report-dir", str(tmp_path / "reports"))
        assert result.code == 2 and "on-down: ran " in result.stdout and marker.exists()

    def test_a_tool_missing_on_this_host_stops_only_what_would_run_it(self, cli, tmp_path, monkeypatch):
        """on-down names a restart tool of the cron host: serve, get_celery_health, verdict and
        --no-on-down runs on other hosts never run it, so they neither check nor refuse it."""
        (tmp_path / "pyproject.toml").write_text('[tool.celery-probe]\non-down = "no-such-restart-tool --all"\n')
        monkeypatch.chdir(tmp_path)
        args = ["-b", "redis://127.0.0.1:1/0", "--report-dir", str(tmp_path / "reports"), "--deadline", "2"]
        refused = cli("run", *args)
        assert refused.code == 64 and "no-such-restart-tool" in refused.stderr
        assert cli("run", *args, "--no-on-down").code == 2
        assert probe_verdict(3, broker="redis://127.0.0.1:1/0")["status"] == "down"
        assert cli("verdict", str(tmp_path / "reports" / "latest.json")).code == 2
        settings = resolve_settings(ignore=REMEDIATION)
        assert settings.on_down == () and "on_down" not in settings.sources
        with pytest.raises(ProbeUsageError, match="no-such-restart-tool"):
            resolve_settings()

    @pytest.mark.redis_only
    def test_a_password_never_reaches_output_or_history(self, cli, tmp_path):
        password = "pw-Xq7-remediate"
        with RedisServer(password=password) as redis:
            url = redis.url(0)
            assert password in url
            command = command_line(PY, APPS / "restart_worker.py", tmp_path / "calls", tmp_path / "pid",
                                   tmp_path / "log", "never@host", "nowhere", "600", url)
            try:
                result = cli("run", "-b", url, "--backend", redis.url(1), "--report-dir", str(tmp_path / "reports"),
                             "--deadline", "3", "--on-down", command, "--on-down-after", "0s")
            finally:
                for pid in map(int, (tmp_path / "pid").read_text().split() if (tmp_path / "pid").exists() else []):
                    os.kill(pid, signal.SIGKILL)  # the launcher waits 600 s before starting a worker
        assert result.code == 2 and "on-down: ran " in result.stdout, result.stdout + result.stderr
        assert password not in result.stdout + result.stderr
        _runs, actions = history(tmp_path / "reports")
        assert "restarting workers of redis://:***@" in actions[0]["output_tail"]
        assert "password was ***" in actions[0]["output_tail"]
        for path in (tmp_path / "reports").iterdir():
            assert password not in path.read_text(errors="replace"), path


class TestUsageErrors:
    """A bad remediation setting is one line and exit 64, before any probe runs."""

    @pytest.mark.parametrize(("extra", "why"), [
        (["--on-down", "no-such-restart-tool --all"], "executable 'no-such-restart-tool' not found on PATH (from --on-down)"),
        (["--on-down", ""], "invalid on-down '': is empty (from --on-down)"),
        (["--on-down", "true", "--on-down-after", "5 minutes"], "invalid on-down-after '5 minutes'"),
    ])
    def test_one_line_exit_64(self, cli, tmp_path, extra, why):
        # A blackholed broker would take the whole deadline: a fast exit proves nothing was probed.
        result = cli("run", "-b", "redis://10.255.255.1:6379/0", "--deadline", "30", "--report-dir",
                     str(tmp_path / "reports"), *extra, timeout=20)
        assert result.code == 64 and why in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr and not (tmp_path / "reports" / "verdict.json").exists()
        assert result.elapsed < 10

    @pytest.mark.parametrize(("env", "why"), [
        ({"CELERY_PROBE_ON_DOWN": "true", "CELERY_PROBE_ON_DOWN_DRY_RUN": "maybe"},
         "invalid on-down-dry-run 'maybe': must be true or false"),
        ({"CELERY_PROBE_ON_DOWN": "true", "CELERY_PROBE_ON_DOWN_EVERY": "-1m"}, "invalid on-down-every '-1m'"),
        ({"CELERY_PROBE_ON_DOWN": "restart 'unclosed"}, "cannot be split into arguments"),
    ])
    def test_bad_environment_is_one_line_exit_64(self, cli, tmp_path, env, why):
        result = cli("run", "-b", "redis://10.255.255.1:6379/0", "--deadline", "30", "--report-dir",
                     str(tmp_path / "reports"), env=env, timeout=20)
        assert result.code == 64 and why in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "(from environment variable CELERY_PROBE_ON_DOWN" in result.stderr
        assert "Traceback" not in result.stderr and not (tmp_path / "reports" / "verdict.json").exists()
        assert result.elapsed < 10

    def test_not_with_targets(self, cli, tmp_path):
        (tmp_path / "targets.toml").write_text('[targets.a]\nbroker = "redis://127.0.0.1:1/0"\n')
        result = cli("run", "--targets", str(tmp_path / "targets.toml"), "--on-down", "true")
        assert result.code == 64 and "cannot be used with --targets" in result.stderr
