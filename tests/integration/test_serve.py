"""`celery-probe serve` as a real uvicorn process, against a real redis-server and worker.

Every request is real HTTP on loopback. The runs counter on /metrics counts the probe runs
the server started (each run's broadcasts are fixed), so a test can show that traffic
causes none.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from celery_probe.config.settings import Settings, resolve_settings
from celery_probe.run.child import check_round_trip, child_environment
from celery_probe.serve.loop import ProbeLoop
from celery_probe.testing import CeleryWorker, RedisServer, free_port, wait_until
from tests.support.environment import APPS, app_env, run_cli
from tests.support.serving import HEALTH, ServeProcess, http_get

pytestmark = pytest.mark.redis_only  # private redis-servers; nothing here depends on --broker

DEADLINE = "2"
FAST = 0.5  # the health path must answer well within this, broker frozen or not


def serve_args(*extra: str, interval: str = "1") -> list[str]:
    return ["-A", "probe_test_app", "--expect-workers", "1", "--deadline", DEADLINE, "--interval", interval, *extra]


@pytest.fixture(scope="module")
def deployment(module_redis):
    """One real Redis and one worker, shared by the read-only tests of this module."""
    env = app_env(module_redis.url(0), module_redis.url(1))
    with CeleryWorker("probe_test_app", name="serve@%h", env=env, pythonpath=[APPS]) as worker:
        yield env, worker


@pytest.fixture(scope="module")
def quiet_server(deployment, tmp_path_factory):
    """A server probing once a minute: after its first run, nothing else should start one."""
    env, _worker = deployment
    # Generous limits: its one run must be healthy even on a loaded machine (a slow round trip
    # would be degraded, and the next run is a minute away).
    args = ["-A", "probe_test_app", "--expect-workers", "1", "--deadline", "5", "--roundtrip-slow", "4",
            "--interval", "60"]
    with ServeProcess(*args, env=env, cwd=tmp_path_factory.mktemp("serve")) as server:
        first = wait_until(lambda: (v := server.health())["status"] != "unknown" and v, timeout=30,
                           what="the first verdict")
        assert first["status"] == "healthy", first["reasons"]
        yield server


class TestRoutes:
    def test_health_serves_the_latest_verdict_with_its_age(self, quiet_server, deployment):
        _env, worker = deployment
        reply = quiet_server.get(HEALTH)
        assert reply.status == 200 and reply.headers["content-type"] == "application/json"
        body = reply.json()
        assert body["status"] == "healthy" and list(body["workers"]) == [worker.name]
        assert body["queues"]["celery"]["consumers"] == 1 and body["roundtrip_ms"] > 0
        assert 0 <= body["age_s"] < 70
        assert body["interval_s"] == 60
        produced = datetime.fromisoformat(body["produced_at"])
        assert abs(time.time() - body["age_s"] - produced.timestamp()) < 1.0
        later = quiet_server.get(HEALTH).json()
        assert later["age_s"] >= body["age_s"] and later["produced_at"] == body["produced_at"]
        # Fresh for as long as the next verdict is not due, never longer than the interval.
        cache = reply.headers["cache-control"]
        assert cache.startswith("public, max-age=")
        assert 0 <= int(cache.rsplit("=", 1)[1]) <= 60 - int(body["age_s"])

    def test_healthz_is_200_when_healthy_and_never_cached(self, quiet_server):
        reply = quiet_server.get("/healthz")
        assert reply.status == 200
        assert reply.headers["cache-control"] == "no-store"
        assert reply.headers["x-celery-probe-status"] == "healthy"
        assert reply.json()["status"] == "healthy"

    def test_ops_alerts_document(self, quiet_server):
        reply = quiet_server.get("/api/interactions/metrics/ops-alerts")
        assert reply.status == 200
        document = reply.json()
        assert document["alerts"] == []
        assert document["celery_health"]["status"] == "healthy"
        assert document["celery_health"]["worker_alive"] is True

    def test_metrics_describe_the_verdict(self, quiet_server, deployment):
        _env, worker = deployment
        metrics = quiet_server.metrics()
        health = quiet_server.health()
        for status in ("healthy", "degraded", "down", "unknown"):
            assert metrics[("celery_probe_status", (("status", status),))] == (status == "healthy")
        assert metrics[("celery_probe_workers_up", ())] == 1
        assert metrics[("celery_probe_workers_expected", ())] == 1
        assert metrics[("celery_probe_queue_length", (("queue", "celery"),))] == 0
        assert metrics[("celery_probe_queue_consumers", (("queue", "celery"),))] == 1
        roundtrip = metrics[("celery_probe_roundtrip_seconds", (("queue", "celery"),))]
        assert roundtrip == pytest.approx(health["queues"]["celery"]["roundtrip_ms"] / 1000)
        assert metrics[("celery_probe_worker_ping_latency_seconds", (("worker", worker.name),))] > 0
        durations = {dict(k[1])["probe"]: v for k, v in metrics.items() if k[0] == "celery_probe_probe_duration_seconds"}
        assert "test_workers.py::test_workers_answer_ping" in durations
        assert "test_roundtrip.py::test_task_roundtrip" in durations and all(v >= 0 for v in durations.values())
        last_run = metrics[("celery_probe_last_run_timestamp_seconds", ())]
        assert metrics[("celery_probe_last_success_timestamp_seconds", ())] == last_run
        assert 0 <= metrics[("celery_probe_verdict_age_seconds", ())] < 70
        assert metrics[("celery_probe_runs_total", ())] >= 1
        assert metrics[("celery_probe_runs_killed_total", ())] == 0

    def test_unknown_paths_and_methods(self, quiet_server):
        assert quiet_server.get("/nope").status == 404
        assert quiet_server.get("/health/celery").status == 404  # the prefix is part of the path


class TestNoBroadcastPerRequest:
    def test_a_burst_of_500_requests_starts_no_probe_run(self, quiet_server):
        import http.client

        before = quiet_server.runs()
        conn = http.client.HTTPConnection("127.0.0.1", quiet_server.port, timeout=2)
        started = time.perf_counter()
        try:
            replies = [http_get(quiet_server.port, HEALTH, conn=conn) for _ in range(500)]
        finally:
            conn.close()
        took = time.perf_counter() - started
        assert {r.status for r in replies} == {200}
        assert {r.json()["status"] for r in replies} == {"healthy"}
        assert max(r.elapsed for r in replies) < FAST
        # The quiet server probes once a minute; the burst took a few seconds at most.
        assert took < 30
        assert quiet_server.runs() == before


class TestFrozenBroker:
    """SIGSTOP on redis-server: accepts TCP, never answers. The endpoint must not care."""

    def test_answers_at_once_with_the_last_verdict_then_turns_down(self, redis_server, start_worker, tmp_path):
        env = app_env(redis_server.url(0), redis_server.url(1))
        start_worker(env)
        with ServeProcess(*serve_args(), env=env, cwd=tmp_path) as server:
            server.wait_status("healthy", timeout=20)
            frozen_at = time.time()
            redis_server.freeze()
            try:
                latencies, statuses = [], []
                end = time.monotonic() + 20
                while time.monotonic() < end:
                    reply = server.get(HEALTH, timeout=FAST * 4)
                    latencies.append(reply.elapsed)
                    body = reply.json()
                    statuses.append(body["status"])
                    if datetime.fromisoformat(body["produced_at"]).timestamp() < frozen_at - 0.05:
                        assert body["status"] == "healthy"  # produced before the freeze
                    if body["status"] == "down":
                        break
                    time.sleep(0.05)  # pacing the poll, not waiting for a result
                assert statuses[0] == "healthy" and statuses[-1] == "down", statuses
                assert max(latencies) < FAST, latencies
                # down within: the rest of the interval, one run (deadline + process start-up)
                assert time.time() - frozen_at < 1 + float(DEADLINE) + 3
                down = server.get("/healthz")
                assert down.status == 503 and down.json()["status"] == "down"
                assert "celery_broker_unreachable" in {r["code"] for r in server.health()["reasons"]}
            finally:
                redis_server.thaw()
            server.wait_status("healthy", timeout=20)
            assert server.get("/healthz").status == 200


class TestBeforeTheFirstRun:
    def test_unknown_saying_so_with_a_custom_prefix(self, redis_server, tmp_path):
        """The broker is frozen from the start, so the first run takes the whole deadline."""
        env = app_env(redis_server.url(0), redis_server.url(1))
        redis_server.freeze()
        try:
            with ServeProcess(*serve_args("--prefix", "/status/"), env=env, cwd=tmp_path) as server:
                reply = server.get("/status/health/celery")
                assert reply.elapsed < FAST
                body = reply.json()
                assert body["status"] == "unknown" and body["age_s"] is None and body["produced_at"] is None
                assert "no probe run has finished yet" in body["reasons"][0]["message"]
                assert reply.headers["cache-control"] == "no-store"
                assert server.get("/healthz").status == 200  # unknown is not down
                assert server.get(HEALTH).status == 404
                down = server.wait_status("down", timeout=20, path="/status/health/celery")
                assert down["age_s"] >= 0
        finally:
            redis_server.thaw()


class TestRestart:
    """A restarted server takes the last run and the last success from --report-dir's history."""

    def test_last_success_is_served_from_history_before_and_after_the_first_run(self, redis_server, tmp_path):
        from datetime import timezone

        reports = tmp_path / "reports"
        reports.mkdir()
        start = int(time.time()) - 3600
        stamps = [datetime.fromtimestamp(start + 30 * n, tz=timezone.utc).isoformat(timespec="seconds")
                  for n in range(65)]
        lines = [{"checked_at": at, "status": "healthy", "workers": 1, "codes": []} for at in stamps[:64]]
        lines.append({"checked_at": stamps[64], "status": "down", "workers": 0, "codes": ["celery_worker_down"]})
        (reports / "history.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        last_healthy, last_down = start + 30 * 63, start + 30 * 64
        env = app_env(redis_server.url(0), redis_server.url(1))
        redis_server.freeze()  # the first run takes its whole deadline: /metrics is read before it ends
        try:
            with ServeProcess(*serve_args("--report-dir", str(reports), interval="600"), env=env,
                              cwd=tmp_path) as server:
                before = server.metrics()
                assert before[("celery_probe_runs_total", ())] <= 1 and server.health()["produced_at"] is None
                assert before[("celery_probe_status", (("status", "unknown"),))] == 1
                assert before[("celery_probe_last_success_timestamp_seconds", ())] == last_healthy
                assert before[("celery_probe_last_run_timestamp_seconds", ())] == last_down
                assert before[("celery_probe_verdict_age_seconds", ())] == pytest.approx(time.time() - last_down, abs=5)
                server.wait_status("down", timeout=20)  # the first run, against a frozen broker
                after = server.metrics()
                assert after[("celery_probe_last_success_timestamp_seconds", ())] == last_healthy
                assert after[("celery_probe_last_run_timestamp_seconds", ())] > time.time() - 60
        finally:
            redis_server.thaw()


class TestFreshRuns:
    def test_fresh_runs_start_every_run_as_a_new_interpreter(self, deployment, tmp_path):
        """``--fresh-runs``: no resident runner; every run is serve's own child ``python -m celery_probe``."""
        env, _worker = deployment
        with ServeProcess(*serve_args("--fresh-runs", interval="0.5"), env=env, cwd=tmp_path) as server:
            seen: dict[int, bytes] = {}

            def runs_seen() -> bool:
                for pid in server.descendants():
                    try:
                        seen.setdefault(pid, Path(f"/proc/{pid}/cmdline").read_bytes())
                    except OSError:
                        continue  # it ended meanwhile: catch the next one
                return sum(b"celery_probe\0run\0" in cmdline for cmdline in seen.values()) >= 2

            wait_until(runs_seen, timeout=30, interval=0.005, what="two fresh probe runs")
            server.wait_status("healthy", timeout=20)
            assert server.runs() >= 2
            assert not any(b"celery_probe.run.resident" in cmdline for cmdline in seen.values()), seen
            for pid in list(seen):
                try:
                    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except OSError:
                    continue  # ended: it was seen as serve's descendant, which is all it could be
                if b"celery_probe\0run\0" in seen[pid]:
                    assert parent == server.pid  # serve's own child, no runner in between

    def test_no_warm_sessions_forks_every_run_from_the_resident_runner(self, deployment, tmp_path):
        """``--warm-sessions 0``: the resident runner forks every run itself, from no prepared run."""
        env, _worker = deployment
        probes, record = tmp_path / "probes", tmp_path / "runs.txt"
        probes.mkdir()
        (probes / "probe_parent.py").write_text(
            "import os\n\n\ndef probe_parent():\n"
            "    with open(os.environ['PROBE_TEST_RUNS'], 'a') as out:\n"
            "        out.write(f'{os.getppid()}\\n')\n")
        with ServeProcess(*serve_args("--warm-sessions", "0", "--probes", str(probes), interval="0.5"),
                          env={**env, "PROBE_TEST_RUNS": str(record)}, cwd=tmp_path) as server:
            wait_until(lambda: record.exists() and len(record.read_text().split()) >= 5, timeout=60,
                       interval=0.1, what="five probe runs")
            server.wait_status("healthy", timeout=20)
            runners = [pid for pid in server.descendants()
                       if b"celery_probe.run.resident\x00--warm-sessions\x000\x00" in _cmdline(pid)]
            assert len(runners) == 1, [_cmdline(pid) for pid in server.descendants()]
            parents = [int(pid) for pid in record.read_text().split()]
            forked = [pid for pid in parents if pid != server.pid]  # (fresh while the runner started)
            assert set(forked) == {runners[0]}, f"a run was forked from a warm session: {parents} vs {runners}"
            assert len(forked) >= 3, parents


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # ended meanwhile


class TestCredentials:
    def test_password_never_on_a_command_line_or_in_a_response(self, tmp_path):
        """The broker URL reaches each run in its environment: never on a command line, and
        never in the resident runner's own environment (a run's variables are set in the run)."""
        secret = "s3cr3t-pw-for-serve"
        with RedisServer(password=secret) as redis:
            env = app_env(redis.url(0), redis.url(1))
            with CeleryWorker("probe_test_app", name="pw@%h", env=env, pythonpath=[APPS]):
                serve_env = {**env, "CELERY_PROBE_BROKER": redis.url(0), "CELERY_PROBE_BACKEND": redis.url(1)}
                with ServeProcess("--deadline", DEADLINE, "--interval", "0.5", env=serve_env, cwd=tmp_path) as server:
                    seen: dict[int, tuple[bytes, bytes]] = {}

                    def runs_seen() -> bool:
                        for pid in server.descendants():
                            try:
                                seen.setdefault(pid, (Path(f"/proc/{pid}/cmdline").read_bytes(),
                                                      Path(f"/proc/{pid}/environ").read_bytes()))
                            except OSError:
                                continue  # it ended meanwhile: catch the next one
                        runs = [cmdline for cmdline, _environ in seen.values() if b"celery_probe" in cmdline]
                        return len(runs) >= 3 and any(b"celery_probe.run.resident" in c for c in runs)

                    wait_until(runs_seen, timeout=30, interval=0.005, what="probe runs and the resident runner")
                    for cmdline, environ in seen.values():
                        assert secret.encode() not in cmdline
                        if b"celery_probe.run.resident" in cmdline:
                            assert not any(v.startswith(b"CELERY_PROBE_") for v in environ.split(b"\0"))
                    # The run learns its broker from CELERY_PROBE_BROKER alone: healthy means it arrived.
                    server.wait_status("healthy", timeout=20)
                    for path in (HEALTH, "/healthz", "/metrics", "/api/interactions/metrics/ops-alerts"):
                        assert secret not in server.get(path).body.decode()


class TestLifecycle:
    def test_sigterm_stops_the_server_and_kills_a_run_in_progress(self, redis_server, tmp_path):
        env = app_env(redis_server.url(0), redis_server.url(1))
        redis_server.freeze()  # the run in progress waits for its whole deadline
        try:
            server = ServeProcess("-A", "probe_test_app", "--deadline", "20", env=env, cwd=tmp_path).start()
            try:
                child = wait_until(lambda: server.children(), timeout=10, what="a probe run in progress")[0]
                started = time.monotonic()
                code = server.stop()
                assert time.monotonic() - started < 8
                assert code in (0, -signal.SIGTERM)
                wait_until(lambda: not os.path.exists(f"/proc/{child}") or _zombie(child), timeout=5,
                           what="the probe run gone")
            finally:
                server.close()
        finally:
            redis_server.thaw()

    def test_an_overrunning_run_is_killed_and_reported(self, tmp_path):
        """A probe process that never ends (a stand-in interpreter that sleeps) is killed."""
        fake = tmp_path / "python"
        fake.write_text("#!/bin/sh\necho $$ > \"$(dirname \"$0\")/pid\"\nexec sleep 60\n")
        fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
        loop = ProbeLoop(Settings(broker="redis://127.0.0.1:1/0", deadline=0.2), interval=60, python=str(fake))
        started = time.monotonic()
        snapshot = asyncio.run(loop.run_once())
        took = time.monotonic() - started
        assert loop.hard_timeout - 0.1 < took < loop.hard_timeout + 2
        assert snapshot.verdict["status"] == "unknown"
        assert snapshot.verdict["reasons"][0]["code"] == "celery_probe_deadline_exceeded"
        assert loop.runs_started == 1 and loop.runs_killed == 1
        pid = int((tmp_path / "pid").read_text())
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


class TestStaleVerdict:
    def test_a_verdict_the_loop_did_not_replace_is_served_as_unknown(self):
        """In-process: a loop that stopped producing verdicts must not leave an old healthy one up."""
        from celery_probe.serve.app import ProbeService
        from celery_probe.serve.loop import Snapshot

        service = ProbeService(Settings(broker="redis://127.0.0.1:1/0", deadline=1.0), interval=1)
        healthy = {"status": "healthy", "reasons": [], "target": "redis://127.0.0.1:1/0"}
        age = service.stale_after + 5
        service.loop.snapshot = Snapshot(healthy, None, time.time() - age, time.monotonic() - age, run=1)
        reply = service.health()
        body = json.loads(reply.body)
        assert body["status"] == "unknown" and body["reasons"][0]["code"] == "celery_probe_stale"
        assert body["age_s"] >= age and reply.headers["cache-control"] == "no-store"
        assert json.loads(service.healthz().body)["status"] == "unknown"
        service.loop.snapshot = Snapshot(healthy, None, time.time(), time.monotonic(), run=2)
        assert json.loads(service.health().body)["status"] == "healthy"


class TestChildEnvironment:
    def test_every_setting_reaches_the_probe_process_unchanged(self, tmp_path):
        """The child resolves its settings from the environment alone: they must round-trip."""
        extra = tmp_path / "probes"
        extra.mkdir()
        settings = resolve_settings({
            "app": "proj.celery:app", "broker": "redis://:p%40ss@127.0.0.1:1/0", "backend": "redis://127.0.0.1:1/1",
            "queues": ("a", "b"), "expect_workers": "3", "endpoints": ("http://u:pw@127.0.0.1:1/h",),
            "deadline": "2.5", "queue_threshold": ("50", "b=70"), "roundtrip_slow": "0.3",
            "roundtrip_task": "proj.noop", "ping_window": "0.2", "probes": (str(extra),),
            "timeout": "1.5",
        }, environ={}, pyproject=False)
        env = child_environment(settings, {"CELERY_PROBE_QUEUES": "stale", "PATH": "/bin"})
        assert env["CELERY_PROBE_QUEUES"] == "a,b" and env["PATH"] == "/bin"
        assert env["CELERY_PROBE_BROKER"] == "redis://:p%40ss@127.0.0.1:1/0"
        check_round_trip(settings, {})
        again = resolve_settings(environ=env, pyproject=False)
        assert again.with_(sources={}) == settings.with_(sources={})

    def test_an_inherited_variable_cannot_change_what_the_child_probes(self):
        settings = Settings(broker="redis://127.0.0.1:1/0")
        env = child_environment(settings, {"CELERY_PROBE_EXPECT_WORKERS": "9", "CELERY_PROBE_APP": "other"})
        assert "CELERY_PROBE_EXPECT_WORKERS" not in env and "CELERY_PROBE_APP" not in env


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class TestMountedInAHostApp:
    def test_middleware_adds_the_routes_and_follows_the_host_lifespan(self, deployment, tmp_path):
        env, _worker = deployment
        env = {**env, "CELERY_PROBE_APP": "probe_test_app", "CELERY_PROBE_DEADLINE": DEADLINE}
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", "host_app:app", "--port", str(port), "--log-level", "warning"]
        server = ServeProcess(env=env, cwd=tmp_path, command=command)
        server.port = port
        with server:
            host = server.get("/")
            assert host.status == 200 and host.body == b"the host app"
            assert server.get("/host/only").body == b"host route"
            server.wait_status("healthy", timeout=20)
            assert server.runs() >= 1
            assert server.get("/healthz").status == 200
        assert server.proc is not None and server.proc.returncode in (0, -signal.SIGTERM)


class TestUsageErrors:
    @pytest.mark.parametrize(("args", "message"), [
        (["--port", "nope"], "invalid port 'nope': is not a whole number (from --port)"),
        (["--port", "70000"], "invalid port '70000': must be between 0 and 65535"),
        (["--interval", "0"], "invalid interval '0': must be between 0.5 and 86400 seconds"),
        (["--prefix", "/a b"], "invalid prefix '/a b'"),
    ])
    def test_bad_option_is_one_line_and_64(self, args, message, tmp_path):
        result = run_cli("serve", "-b", "redis://127.0.0.1:1/0", *args, cwd=tmp_path, timeout=30)
        assert result.code == 64
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr

    def test_no_target(self, tmp_path):
        result = run_cli("serve", cwd=tmp_path, env={"CELERY_BROKER_URL": ""}, timeout=30)
        assert result.code == 64 and "no target" in result.stderr and result.stderr.count("\n") == 1

    def test_port_in_use(self, tmp_path):
        import socket

        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            result = run_cli("serve", "-b", "redis://127.0.0.1:1/0", "--port", str(port), cwd=tmp_path, timeout=30)
        assert result.code == 64
        assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and result.stderr.count("\n") == 1
