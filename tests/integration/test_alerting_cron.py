"""Cron-style repeated runs: one alert per change of state, reminders, recovery, retries, overlaps.

Every run is a real `celery-probe` process, as cron starts it, against a real health
endpoint (or a real Redis and worker), a real SMTP server and a real webhook receiver.
"""

from __future__ import annotations

import json
import selectors
from datetime import datetime
from pathlib import Path

import pytest

from celery_probe.testing import RedisServer, free_port, wait_until
from tests.support.alert_servers import SmtpSink, read_state, start_cli
from tests.support.environment import app_env, run_cli

OPS = "ops@example.com"


def subjects(sink: SmtpSink) -> list[str]:
    return [m.subject for m in sink.received]


class Cron:
    """Runs `celery-probe check` with one state file, like successive cron ticks."""

    def __init__(self, health, tmp_path: Path, *channels: str, extra: tuple[str, ...] = ()) -> None:
        self.health, self.tmp_path = health, tmp_path
        self.state = tmp_path / "alert-state.json"
        self.args = [*channels, "--state-file", str(self.state), *extra]
        self.results = []

    def tick(self, status: str | None = None, *more: str):
        if status is not None:
            self.health.serve(status)
        result = run_cli("check", self.health.url(), *self.args, *more, cwd=self.tmp_path)
        assert "Traceback" not in result.stderr, result.stderr
        self.results.append(result)
        return result


def mail(smtp_sink: SmtpSink) -> tuple[str, ...]:
    return ("--email", OPS, "--smtp", smtp_sink.address, "--mail-from", "probe@example.com")


class TestChangesOfState:
    def test_one_alert_per_change_then_a_recovery(self, health, smtp, hooks, tmp_path):
        cron = Cron(health, tmp_path, *mail(smtp), "--webhook", hooks.url())
        expected = [  # status served, mails so far, posts so far
            ("healthy", 0, 0), ("down", 1, 1), ("down", 1, 1), ("down", 1, 1),
            ("degraded", 2, 2), ("degraded", 2, 2), ("healthy", 3, 3), ("healthy", 3, 3),
        ]
        for status, mails, posts in expected:
            result = cron.tick(status)
            assert result.code == {"healthy": 0, "down": 2, "degraded": 3}[status]
            assert (len(smtp.received), len(hooks.posts)) == (mails, posts), (status, result.stderr)
        assert subjects(smtp) == ["[celery-probe CRITICAL] Celery worker DOWN",
                                  "[celery-probe WARNING] Celery queue HIGH",
                                  "[celery-probe RECOVERED] Celery healthy again"]
        recovery = smtp.received[-1].body
        assert "Celery is healthy again." in recovery and "was degraded since" in recovery
        assert [p.json()["event"] for p in hooks.posts] == ["problem", "change", "recovery"]
        state = read_state(cron.state)
        assert state["status"] == "healthy" and state["alerted"] is None and state["pending"] == []

    def test_without_a_state_file_every_bad_run_alerts_and_none_recovers(self, health, smtp, tmp_path):
        for status in ["down", "down", "healthy"]:
            health.serve(status)
            run_cli("check", health.url(), *mail(smtp), cwd=tmp_path)
        assert subjects(smtp) == ["[celery-probe CRITICAL] Celery worker DOWN"] * 2

    def test_damaged_state_file_is_set_aside(self, health, smtp, tmp_path):
        cron = Cron(health, tmp_path, *mail(smtp))
        cron.state.write_text('{"version": 1, "pending": [{"chan')
        result = cron.tick("down")
        assert "is damaged" in result.stderr and "starting afresh" in result.stderr
        assert cron.state.with_name(cron.state.name + ".corrupt").exists()
        assert len(smtp.received) == 1 and read_state(cron.state)["alerted"] == "down"


class TestRepeat:
    INTERVAL = 2.0

    def test_reminders_at_the_interval_and_not_in_between(self, health, smtp, hooks, tmp_path):
        cron = Cron(health, tmp_path, *mail(smtp), "--webhook", hooks.url(),
                    extra=("--repeat-every", str(self.INTERVAL)))
        cron.tick("down")
        quiet = 0

        def tick_until_two_reminders() -> bool:
            nonlocal quiet
            before = len(hooks.posts)
            cron.tick()
            quiet += len(hooks.posts) == before
            return len(hooks.posts) >= 3

        wait_until(tick_until_two_reminders, timeout=30, interval=0, what="two reminders")
        payloads = [p.json() for p in hooks.posts]
        assert [p["event"] for p in payloads] == ["problem", "repeat", "repeat"]
        sent = [datetime.fromisoformat(p["created_at"]).timestamp() for p in payloads]
        gaps = [b - a for a, b in zip(sent, sent[1:])]
        assert all(self.INTERVAL <= gap < self.INTERVAL + 5 for gap in gaps), gaps
        assert quiet >= 1, "no run fell inside the interval, so nothing showed it was honoured"
        assert subjects(smtp) == ["[celery-probe CRITICAL] Celery worker DOWN"] + [
            "[celery-probe CRITICAL] Celery worker still DOWN"] * 2

    def test_zero_disables_reminders(self, health, hooks, tmp_path):
        cron = Cron(health, tmp_path, "--webhook", hooks.url(), extra=("--repeat-every", "0"))
        for _ in range(3):
            cron.tick("down")
        assert len(hooks.posts) == 1


class TestFlapSuppression:
    def test_three_in_a_row_before_alerting(self, health, smtp, tmp_path):
        cron = Cron(health, tmp_path, *mail(smtp), extra=("--min-failures", "3"))
        for status in ["healthy", "down", "healthy", "down", "down", "healthy", "down", "down"]:
            cron.tick(status)
        assert smtp.received == []
        cron.tick("down")
        assert subjects(smtp) == ["[celery-probe CRITICAL] Celery worker DOWN"]
        assert "Problem since:" in smtp.received[0].body
        cron.tick("healthy")
        assert subjects(smtp)[-1] == "[celery-probe RECOVERED] Celery healthy again"


class TestRetry:
    def test_alert_held_while_smtp_is_down_is_sent_once_it_is_back(self, health, hooks, tmp_path):
        port = free_port()  # nothing listens here yet
        cron = Cron(health, tmp_path, "--email", OPS, "--smtp", f"127.0.0.1:{port}", "--webhook", hooks.url())
        first = cron.tick("down")
        assert first.code == 2
        (warning,) = [line for line in first.stderr.splitlines() if "warning" in line]
        assert f"{OPS} (SMTP 127.0.0.1:{port}: connection refused)" in warning
        assert "1 alert(s) kept in" in warning
        assert len(hooks.posts) == 1  # the webhook channel did not wait for the mail one
        pending = read_state(cron.state)["pending"]
        assert [(p["channel"], p["attempts"]) for p in pending] == [(f"email:{OPS}", 1)]

        cron.tick()  # still down, SMTP still down: retried, not duplicated
        pending = read_state(cron.state)["pending"]
        assert [(p["channel"], p["attempts"]) for p in pending] == [(f"email:{OPS}", 2)]

        sink = SmtpSink(port).start()
        try:
            result = cron.tick()
            assert "alert sent: [celery-probe CRITICAL] Celery worker DOWN to ops@example.com" in result.stderr
            assert subjects(sink) == ["[celery-probe CRITICAL] Celery worker DOWN"]
            assert read_state(cron.state)["pending"] == []
            cron.tick()
            assert len(sink.received) == 1 and len(hooks.posts) == 1
        finally:
            sink.stop()

    def test_held_problem_arrives_before_its_recovery(self, health, tmp_path):
        port = free_port()
        cron = Cron(health, tmp_path, "--email", OPS, "--smtp", f"127.0.0.1:{port}")
        cron.tick("down")
        cron.tick("healthy")
        assert [p["notification"]["event"] for p in read_state(cron.state)["pending"]] == ["problem", "recovery"]
        sink = SmtpSink(port).start()
        try:
            cron.tick()
            assert subjects(sink) == ["[celery-probe CRITICAL] Celery worker DOWN",
                                      "[celery-probe RECOVERED] Celery healthy again"]
        finally:
            sink.stop()


def _wait_for_line(proc, timeout: float) -> str:
    """The first stdout line of a running process, waiting at most ``timeout`` seconds."""
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not selector.select(timeout):
            raise TimeoutError("no output")
        return proc.stdout.readline()
    finally:
        selector.close()


class TestOverlappingRuns:
    """A slow run (its SMTP server stalls in DATA) and the next cron tick."""

    def _start_slow_run(self, health, smtp, tmp_path):
        health.serve("down")
        smtp.hold.set()
        state = tmp_path / "alert-state.json"
        args = ["check", health.url(), *mail(smtp), "--state-file", str(state), "--alert-timeout", "30"]
        slow = start_cli(*args, cwd=tmp_path)
        assert smtp.data_started.wait(15), "the first run never reached the SMTP server"
        return slow, args, state

    def test_second_run_skips_when_the_lock_stays_busy(self, health, smtp, tmp_path):
        slow, args, state = self._start_slow_run(health, smtp, tmp_path)
        try:
            second = run_cli(*args, "--lock-timeout", "0.5", cwd=tmp_path)
            assert second.code == 2
            notices = [line for line in second.stderr.splitlines() if line.startswith("celery-probe: notice")]
            assert len(notices) == 1 and "alerting skipped this time" in notices[0]
            assert str(state) + ".lock" in notices[0]
        finally:
            smtp.release.set()
            _out, err = slow.communicate(timeout=30)
        assert slow.returncode == 2 and "alert sent" in err
        assert len(smtp.received) == 1
        run_cli(*args, cwd=tmp_path)  # a later tick: the state is whole and says "alerted"
        assert len(smtp.received) == 1 and read_state(state)["alerted"] == "down"

    def test_second_run_waits_for_the_lock_and_sends_nothing(self, health, smtp, tmp_path):
        slow, args, state = self._start_slow_run(health, smtp, tmp_path)
        waiting = start_cli(*args, "--lock-timeout", "30", cwd=tmp_path)
        try:
            # It printed its verdict line, so it is now at (or past) the lock the slow run holds.
            assert "DOWN" in _wait_for_line(waiting, 15)
            assert waiting.poll() is None, "the second run finished while the first held the lock"
        finally:
            smtp.release.set()
            _out, slow_err = slow.communicate(timeout=30)
            _out2, waiting_err = waiting.communicate(timeout=30)
        assert "alert sent" in slow_err
        assert "alert sent" not in waiting_err and "notice" not in waiting_err
        assert len(smtp.received) == 1
        state_doc = read_state(state)
        assert state_doc["status_runs"] == 2 and state_doc["pending"] == []


class TestRunCommand:
    """`celery-probe run` from cron: a real Redis (with a password) and a real worker."""

    PASSWORD = "brokerpw-7c1e"

    @pytest.fixture
    def broker(self):
        with RedisServer(password=self.PASSWORD) as server:
            yield server

    def test_alerts_on_change_and_recovery_without_leaking_the_broker_password(
            self, broker, start_worker, cli, smtp, hooks, tmp_path):
        env = app_env(broker.url(0), broker.url(1))
        state = tmp_path / "alert-state.json"
        args = ["run", "-A", "probe_test_app", "--expect-workers", "1", "--deadline", "3", "--format", "json",
                *mail(smtp), "--webhook", hooks.url(), "--state-file", str(state), "--service-name", "celery-worker"]

        worker = start_worker(env)
        healthy = cli(*args, env=env)
        assert healthy.code == 0, healthy.stderr
        assert healthy.verdict()["status"] == "healthy"  # stdout stays pure JSON
        assert smtp.received == [] and hooks.posts == []

        worker.stop()
        down = cli(*args, env=env)
        assert down.code == 2, down.stdout + down.stderr
        assert down.verdict()["status"] == "down"
        assert "alert sent: [celery-probe CRITICAL] Celery worker DOWN" in down.stderr
        (problem,) = smtp.received
        assert "Celery worker is not responding" in problem.body
        assert "celery_worker_down [critical]" in problem.body
        assert "systemctl status celery-worker" in problem.body
        assert "redis://:***@127.0.0.1" in problem.body

        assert cli(*args, env=env).code == 2
        assert len(smtp.received) == 1 and len(hooks.posts) == 1

        start_worker(env)
        back = cli(*args, env=env)
        assert back.code == 0, back.stderr
        assert subjects(smtp) == ["[celery-probe CRITICAL] Celery worker DOWN",
                                  "[celery-probe RECOVERED] Celery healthy again"]
        assert [p.json()["event"] for p in hooks.posts] == ["problem", "recovery"]

        leaked = [where for where, text in [
            ("mail", "".join(m.data.decode() for m in smtp.received)),
            ("webhook", "".join(p.body.decode() for p in hooks.posts)),
            ("state", state.read_text()),
            ("stderr", down.stderr + back.stderr),
        ] if self.PASSWORD in text]
        assert leaked == []

    def test_bad_alert_option_fails_before_the_probes_run(self, cli, tmp_path):
        result = cli("run", "-b", "redis://127.0.0.1:9/0", "--webhook", "ftp://x/y")
        assert result.code == 64 and "--webhook" in result.stderr
        assert not (tmp_path / "reports" / "verdict.json").exists()



class TestRootCause:
    """`celery-probe run` mails about the root cause: a stopped worker, then a stopped broker."""

    def test_subject_steps_and_folding_follow_the_cause(self, start_worker, cli, smtp, hooks):
        with RedisServer() as server:
            env = app_env(server.url(0), server.url(1))
            args = ["run", "-A", "probe_test_app", "--expect-workers", "1", "--deadline", "3",
                    *mail(smtp), "--webhook", hooks.url("/generic"), "--webhook", "slack=" + hooks.url("/slack"),
                    "--service-name", "celery-worker", "--broker-service", "redis-server",
                    "--alert-impact", "order e-mails and invoices"]
            start_worker(env).stop()  # a worker that was there and is gone
            worker_down = cli(*args, env=env)
            server.stop()  # now the broker refuses connections
            broker_down = cli(*args, env=env)
        assert (worker_down.code, broker_down.code) == (2, 2), worker_down.stdout + broker_down.stdout
        first, second = smtp.wait_for(2)
        posts = hooks.wait_for(4)

        assert first.subject == "[celery-probe CRITICAL] Celery worker DOWN"
        assert "3. Restart it if needed: systemctl restart celery-worker" in first.body
        assert "- Affected: order e-mails and invoices" in first.body

        assert second.subject == "[celery-probe CRITICAL] Celery broker UNREACHABLE"
        assert "alert sent: [celery-probe CRITICAL] Celery broker UNREACHABLE" in broker_down.stderr
        body = second.body
        assert "The Celery broker does not answer" in body and "worker is not responding" not in body
        steps = body.split("Action required:\n", 1)[1].split("\n\n", 1)[0]
        assert steps.startswith("1. Check the broker service: systemctl status redis-server")
        assert "Do not restart the workers for this" in steps and "systemctl restart" not in steps
        reasons = body.split("Reasons:\n", 1)[1].split("\n\n", 1)[0].splitlines()
        assert reasons[0].startswith("- celery_broker_unreachable [critical]: broker redis://127.0.0.1:")
        assert "Connection refused" in reasons[0] or "connection refused" in reasons[0].lower()
        (folded,) = [line for line in reasons if "not attempted" in line]
        # The result backend is on the same stopped Redis: two causes, listed, then their consequences.
        assert reasons[1].startswith("- celery_backend_unreachable [critical]: ")
        assert folded.startswith("- and ") and " probes not attempted because of the above: " in folded
        assert "celery_worker_down" in folded and body.count("not attempted") == 1

        by_path = {}
        for post in posts:
            by_path.setdefault(post.path, []).append(post.json())
        generic = by_path["/generic"][-1]
        assert generic["title"] == "[celery-probe CRITICAL] Celery broker UNREACHABLE"
        assert generic["cause"] == "celery_broker_unreachable"
        assert generic["impact"][0] == "Affected: order e-mails and invoices"
        assert any("Do not restart the workers" in step for step in generic["steps"])
        slack = by_path["/slack"][-1]["text"]
        assert slack.startswith("[celery-probe CRITICAL] Celery broker UNREACHABLE\n")
        assert slack.count("not attempted") == 1 and "What to do:" in slack

    def test_impact_from_the_environment_needs_no_destination(self, cli):
        """CELERY_PROBE_ALERT_IMPACT may sit in a shared env file; a run without alerts still runs."""
        result = cli("run", "-b", f"redis://127.0.0.1:{free_port()}/0", "--deadline", "2",
                     env={"CELERY_PROBE_ALERT_IMPACT": "invoices"})
        assert result.code == 2, result.stderr

    def test_a_bad_impact_is_a_usage_error(self, cli, smtp):
        result = cli("run", "-b", "redis://127.0.0.1:9/0", *mail(smtp), "--alert-impact", "x" * 301)
        assert result.code == 64 and "--alert-impact" in result.stderr


def test_state_file_is_plain_json(health, hooks, tmp_path):
    cron = Cron(health, tmp_path, "--webhook", hooks.url())
    cron.tick("down")
    document = json.loads(cron.state.read_text())
    assert document["version"] == 1 and document["status"] == "down"
    assert not list(tmp_path.glob(".alert-state.json.*.tmp"))
