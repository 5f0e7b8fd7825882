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

import pytest

from celery_probe.config.settings import REMEDIATION, resolve_settings
from celery_probe.errors import ProbeUsageError
from celery_probe.remediation.command import command_environment, run_command
from celery_probe.run.child import probe_verdict
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
