"""A healthy deployment: one real Redis, one real worker, the full probe run."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from celery_probe.testing import CeleryWorker
from tests.support.environment import APPS, ROOT, redis_state


@pytest.fixture(scope="module")
def env(module_target):
    return module_target.env()


@pytest.fixture(scope="module")
def queue(module_target):
    return module_target.default_queue


@pytest.fixture(scope="module")
def worker(env, queue):
    with CeleryWorker("probe_test_app", name="healthy@%h", env=env, pythonpath=[APPS], queues=[queue]) as w:
        yield w


class TestHealthyRun:
    """`celery-probe run` against a live worker answers healthy with the full verdict."""

    def test_exit_zero_and_full_verdict(self, worker, env, cli, tmp_path, queue):
        result = cli("run", "-A", "probe_test_app", "--expect-workers", "1", "--format", "json", env=env)
        assert result.code == 0, result.stdout + result.stderr
        verdict = result.verdict()
        assert verdict["status"] == "healthy"
        assert verdict["worker_alive"] is True
        assert list(verdict["workers"]) == [worker.name]
        assert verdict["active_tasks"] == 0 and verdict["scheduled_tasks"] == 0
        assert verdict["queue_length"] == 0
        assert verdict["queues"][queue]["consumers"] == 1
        assert verdict["queues"][queue]["roundtrip_ms"] > 0
        assert verdict["roundtrip_ms"] == verdict["queues"][queue]["roundtrip_ms"]
        assert re.match(r"\d{4}-\d\d-\d\dT", verdict["last_heartbeat"])
        assert [r for r in verdict["reasons"] if r["severity"] != "info"] == []
        for key in ("checked_at", "duration_s", "target"):
            assert verdict[key]

    def test_operator_pytest_environment_does_not_reach_the_probe_session(self, worker, env, cli):
        """A CI job's PYTEST_ADDOPTS / PYTEST_PLUGINS are for its own tests, not for a health check."""
        hostile = {"PYTEST_ADDOPTS": "-p no:legacypath --maxfail=1 -k nothing_matches",
                   "PYTEST_PLUGINS": "no_such_plugin_module"}
        result = cli("run", "-A", "probe_test_app", "--expect-workers", "1", "--format", "json",
                     env={**env, **hostile})
        assert result.code == 0, result.stdout + result.stderr
        assert result.verdict()["status"] == "healthy"
        assert result.verdict()["probes"]["passed"] >= 5

    def test_writes_report_verdict_and_history(self, worker, env, cli, tmp_path):
        for _ in range(2):
            assert cli("run", "-A", "probe_test_app", "--expect-workers", "1", env=env).code == 0
        reports = tmp_path / "reports"
        report = json.loads((reports / "latest.json").read_text())
        assert {"created", "duration", "exitcode", "summary", "tests"} <= set(report)
        probes = {t["nodeid"].split("::")[-1]: t for t in report["tests"]}
        assert probes["test_workers_answer_ping"]["metadata"]["probe"].items() >= {
            "severity": "critical", "code": "celery_worker_down",
            "title": "At least one worker answers a remote-control ping.", "file": "test_workers.py",
        }.items()
        ping = probes["test_workers_answer_ping"]["metadata"]["measured"]["ping"]
        assert ping["workers"][0]["name"] == worker.name and ping["workers"][0]["latency_ms"] > 0
        verdict = json.loads((reports / "verdict.json").read_text())
        assert verdict["status"] == "healthy"
        history = (reports / "history.jsonl").read_text().splitlines()
        assert len(history) == 2 and all(json.loads(line)["status"] == "healthy" for line in history)
        assert not list(reports.glob(".*.tmp")), "temporary files left behind"

    def test_expect_workers_returns_without_waiting_the_window(self, worker, env, cli):
        result = cli("run", "-A", "probe_test_app", "--expect-workers", "1", "--ping-window", "3",
                     "--format", "json", env=env)
        assert result.code == 0
        # The window is 3 s; with the one expected reply in, ping must not wait it out.
        assert result.elapsed < 3, result.elapsed

    @pytest.mark.redis_only  # without the app, the default control exchange is shared
    def test_broker_url_without_app(self, worker, module_target, cli):
        result = cli("run", "-b", module_target.broker_url, "--backend", module_target.backend_url,
                     "--format", "json")
        assert result.code == 0, result.stdout + result.stderr
        assert result.verdict()["status"] == "healthy"

    def test_nagios_line_and_codes(self, worker, env, cli):
        result = cli("run", "-A", "probe_test_app", "--format", "nagios", env=env)
        assert result.code == 0
        line = result.stdout.strip()
        assert "\n" not in line
        assert line.startswith("CELERY OK - healthy")
        text, perf = line.split(" | ")
        assert re.search(r"\bworkers=1;;;0\b", perf) and re.search(r"\bqueue_length=0;;;0", perf)
        # A queue is high from its threshold (100) on: Nagios' range "99" alerts above 99.
        assert re.search(r"'queue [^']+'=0;99;;0", perf), perf

    def test_text_is_plain_without_a_terminal_and_with_no_color(self, worker, env, cli):
        plain = cli("run", "-A", "probe_test_app", env=env)
        assert plain.code == 0 and "HEALTHY" in plain.stdout and "\x1b[" not in plain.stdout
        forced = cli("run", "-A", "probe_test_app", env={**env, "FORCE_COLOR": "1"})
        assert "\x1b[32m" in forced.stdout  # green
        both = cli("run", "-A", "probe_test_app", env={**env, "FORCE_COLOR": "1", "NO_COLOR": "1"})
        assert "\x1b[" not in both.stdout

    def test_verdict_command_reads_the_report(self, worker, env, cli, tmp_path):
        assert cli("run", "-A", "probe_test_app", env=env).code == 0
        again = cli("verdict", str(tmp_path / "reports" / "latest.json"), "--format", "json")
        assert again.code == 0
        written = json.loads((tmp_path / "reports" / "verdict.json").read_text())
        assert again.verdict() == written


class TestPytestEntry:
    """`pytest probes/ --celery-app …` from a checkout produces the same report."""

    def test_pytest_probes_directory(self, worker, env, tmp_path):
        reports = tmp_path / "r"
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "probes/", "--celery-app", "probe_test_app",
             "--expect-workers", "1", "--probe-report-dir", str(reports), "-p", "no:cacheprovider", "-q"],
            cwd=ROOT, env={**__import__("os").environ, **env, "PYTHONPATH": str(APPS)},
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "celery-probe verdict: healthy" in proc.stdout
        report = json.loads((reports / "latest.json").read_text())
        names = {t["nodeid"].split("::")[-1] for t in report["tests"]}
        assert {"test_workers_answer_ping", "test_task_roundtrip", "test_queues_below_threshold"} <= names
        assert json.loads((reports / "verdict.json").read_text())["status"] == "healthy"


class TestPythonApi:
    """`celery_probe.get_celery_health()` returns the classic six-key shape."""

    def test_seed_shape(self, worker, env, monkeypatch, tmp_path):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("PYTHONPATH", str(APPS))
        monkeypatch.chdir(tmp_path)
        import celery_probe

        health = celery_probe.get_celery_health(timeout=5, app="probe_test_app")
        assert set(health) == {"worker_alive", "active_tasks", "scheduled_tasks", "queue_length",
                               "last_heartbeat", "status"}
        assert health["status"] == "healthy" and health["worker_alive"] is True
        assert health["queue_length"] == 0
        assert health["last_heartbeat"] is not None
        assert not (tmp_path / "reports").exists(), "the API must not write into the caller's folder"


class TestEndpointProbe:
    """`--endpoint URL` fails on connection errors, non-2xx, non-JSON or status down."""

    def run(self, cli, env, *urls, deadline="2"):
        args = ["run", "-A", "probe_test_app", "--deadline", deadline, "--format", "json"]
        for url in urls:
            args += ["--endpoint", url]
        return cli(*args, env=env)

    def test_healthy_endpoint_passes_and_is_recorded(self, worker, env, cli, http_server):
        result = self.run(cli, env, http_server.url("/healthy"))
        assert result.code == 0, result.stdout
        recorded = result.verdict()["endpoints"][0]
        assert recorded["status"] == "healthy" and recorded["http_status"] == 200
        assert http_server.hits == ["/healthy"]

    @pytest.mark.parametrize("path, words", [
        ("/down", "status down"),
        ("/500", "HTTP 500"),
        ("/html", "not JSON"),
        ("/big", "larger than"),
        ("/nowhere", "HTTP 404"),
    ])
    def test_bad_endpoint_is_degraded(self, worker, env, cli, http_server, path, words):
        result = self.run(cli, env, http_server.url(path))
        assert result.code == 3, result.stdout
        reason = result.verdict()["reasons"][0]
        assert reason["code"] == "celery_endpoint_down" and words in reason["message"]

    def test_refused_endpoint(self, worker, env, cli):
        from celery_probe.testing import free_port

        result = self.run(cli, env, f"http://127.0.0.1:{free_port()}/health")
        assert result.code == 3 and "connection failed" in result.verdict()["reasons"][0]["message"]

    def test_hanging_endpoint_keeps_the_deadline_and_the_round_trip(self, worker, env, cli, http_server):
        # 4 s, not 2: on a loaded host the prober's own start-up takes a second or more, and
        # with 2 s the run may honestly end as celery_probe_starved instead.
        result = self.run(cli, env, http_server.url("/hang"), deadline="4")
        verdict = result.verdict()
        assert result.code == 3, verdict["reasons"]
        assert result.codes() == {"celery_endpoint_down"}, verdict["reasons"]
        assert verdict["roundtrip_ms"] is not None  # the round trip still had its time
        assert result.elapsed < 4 + 1 + 0.6

    def test_hanging_endpoint_runs_after_the_round_trip(self, worker, env, cli, http_server, tmp_path):
        """A dependency of degraded severity never takes the time of a critical probe."""
        self.run(cli, env, http_server.url("/hang"), deadline="4")
        report = json.loads((tmp_path / "reports" / "latest.json").read_text())
        order = [t["nodeid"].split("::")[0] for t in sorted(report["tests"], key=lambda t: t["metadata"]["probe"]["order"])]
        assert order.index("test_roundtrip.py") < order.index("test_endpoint.py")


@pytest.mark.redis_only
class TestNoLitter:
    """Repeated runs leave the broker and the result backend as they found them."""

    def test_ten_runs_leave_no_keys(self, worker, env, module_target, cli):
        assert cli("run", "-A", "probe_test_app", "--expect-workers", "1", env=env).code == 0
        before = redis_state(module_target.redis)
        for _ in range(10):
            assert cli("run", "-A", "probe_test_app", env=env).code == 0
        after = redis_state(module_target.redis)
        assert after == before
        assert not [key for db, key in after if key.startswith("celery-task-meta-")]
