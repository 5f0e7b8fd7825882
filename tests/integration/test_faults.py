"""Down and degraded deployments, each against real processes, each within deadline + 1 s.

The bound is measured on the whole `celery-probe run` process, interpreter start-up
included; SLACK absorbs a noisy machine without hiding a hang (a hang is the deadline
times several, not a fraction of a second).
"""

from __future__ import annotations

import json

import pytest

from celery_probe.testing import RedisServer, free_port, wait_until
from tests.support.environment import app_env
from tests.support.faults import TcpProxy

DEADLINE = 2.0
SLACK = 0.6
BOUND = DEADLINE + 1.0 + SLACK


def probe(cli, env, *extra):
    return cli("run", "-A", "probe_test_app", "--deadline", str(DEADLINE), "--format", "json", *extra, env=env)


class TestWorkerFaults:
    """A worker that is gone or frozen makes the verdict down: celery_worker_down."""

    def test_no_worker_at_all(self, target, cli):
        result = probe(cli, target.env())
        assert result.code == 2
        verdict = result.verdict()
        assert verdict["status"] == "down" and verdict["worker_alive"] is False
        assert verdict["last_heartbeat"] is None and verdict["active_tasks"] is None
        assert "celery_worker_down" in result.codes()
        assert result.elapsed < BOUND

    def test_worker_killed(self, target, start_worker, cli):
        env = target.env()
        worker = start_worker(env)
        assert probe(cli, env).code == 0
        worker.kill()
        result = probe(cli, env)
        assert result.code == 2 and "celery_worker_down" in result.codes()
        assert result.elapsed < BOUND

    def test_worker_frozen(self, target, start_worker, cli):
        env = target.env()
        worker = start_worker(env)
        worker.freeze()
        try:
            result = probe(cli, env)
        finally:
            worker.thaw()
        assert result.code == 2 and "celery_worker_down" in result.codes()
        assert result.elapsed < BOUND

    def test_one_of_two_expected_workers(self, target, start_worker, cli):
        env = target.env()
        start_worker(env, name="a@%h")
        result = probe(cli, env, "--expect-workers", "2")
        assert result.code == 3, result.stdout
        assert result.verdict()["status"] == "degraded"
        assert result.codes() == {"celery_workers_missing"}
        assert result.elapsed < BOUND


@pytest.mark.redis_only
class TestBrokerFaults:
    """A broker that refuses or never answers is a verdict within the deadline, not a hang."""

    def test_broker_refused(self, cli):
        port = free_port()
        env = app_env(f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1")
        result = probe(cli, env)
        assert result.code == 2
        assert "celery_broker_unreachable" in result.codes()
        first = result.verdict()["reasons"][0]
        assert first["code"] == "celery_broker_unreachable" and "refused" in first["message"].lower()
        assert result.elapsed < BOUND
        # Everything downstream failed at once with the known reason, not by waiting.
        assert result.elapsed < DEADLINE

    def test_broker_frozen(self, redis_server, start_worker, cli):
        env = app_env(redis_server.url(0), redis_server.url(1))
        start_worker(env)
        redis_server.freeze()
        try:
            result = probe(cli, env)
        finally:
            redis_server.thaw()
        assert result.code == 2
        assert result.verdict()["reasons"][0]["code"] == "celery_broker_unreachable"
        assert result.elapsed < BOUND

    def test_broker_host_does_not_resolve(self, cli):
        env = app_env("redis://no-such-host.invalid:6379/0", "redis://no-such-host.invalid:6379/1")
        result = probe(cli, env)
        assert result.code == 2 and "celery_broker_unreachable" in result.codes()
        assert result.elapsed < BOUND

    def test_broker_restarted_between_runs(self, redis_server, start_worker, cli):
        env = app_env(redis_server.url(0), redis_server.url(1))
        start_worker(env)
        assert probe(cli, env).code == 0
        redis_server.restart()
        result = probe(cli, env)
        # The worker reconnects on its own schedule; whatever the verdict, it is on time.
        assert result.verdict()["status"] in {"healthy", "down"}
        assert result.elapsed < BOUND


STUBBORN_PROBE = """
import time


def test_ignores_every_interruption():
    end = time.monotonic() + 8
    while time.monotonic() < end:
        try:
            time.sleep(0.05)
        except BaseException:
            pass
"""


class TestWatchdog:
    """A probe that swallows the deadline still ends in a printed verdict, not silence."""

    def test_the_unknown_verdict_reaches_stdout_and_the_report(self, cli, tmp_path):
        (tmp_path / "test_stubborn.py").write_text(STUBBORN_PROBE)
        port = free_port()
        env = app_env(f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/1")
        result = probe(cli, env, "--probes", str(tmp_path / "test_stubborn.py"))
        assert result.code == 4, result.stdout + result.stderr
        assert result.codes() == {"celery_probe_deadline_exceeded"}
        assert result.elapsed < BOUND + 1.0  # the watchdog's slack on top of the deadline
        written = json.loads((tmp_path / "reports" / "verdict.json").read_text())
        assert written["reasons"][0]["code"] == "celery_probe_deadline_exceeded"


class TestBackendFaults:
    """Results cannot be stored or read: the round trip is not confirmed, loudly."""

    def test_result_backend_down_while_broker_up(self, target, start_worker, cli):
        backend = RedisServer().start()
        env = target.env(backend=backend.url(0))
        start_worker(env)
        backend.close()
        result = probe(cli, env)
        assert result.code == 2
        assert {"celery_backend_unreachable", "celery_roundtrip_failed"} <= result.codes()
        assert result.verdict()["worker_alive"] is True
        assert result.elapsed < BOUND

    def test_no_result_backend_says_unconfirmed(self, target, start_worker, cli):
        env = target.env(backend=None)
        start_worker(env)
        result = probe(cli, env)
        verdict = result.verdict()
        assert result.code == 0 and verdict["status"] == "healthy"
        assert verdict["roundtrip_ms"] is None
        notes = {r["code"]: r for r in verdict["reasons"] if r["severity"] == "info"}
        assert "celery_roundtrip_unconfirmed" in notes
        assert "cannot be confirmed" in notes["celery_roundtrip_unconfirmed"]["message"]


class TestBusyPools:
    """Busy is not dead: a free child still takes the probe task; a full pool is degraded."""

    def occupy_one_child(self, target, start_worker, concurrency: int):
        """A prefork worker with one child running a long task (revoked at the end)."""
        env = target.env()
        start_worker(env, pool="prefork", concurrency=concurrency)
        client = target.client(backend=False)  # no result wanted: no reply queue left behind
        busy = client.send_task("probe_test.sleep", args=(20,))

        def one_active() -> bool:
            active = client.control.inspect(timeout=0.5).active() or {}
            return sum(len(v) for v in active.values()) == 1

        wait_until(one_active, timeout=15, what="task active")
        return env, busy

    def test_busy_prefork_pool_with_a_free_child_is_healthy(self, target, start_worker, cli):
        env, busy = self.occupy_one_child(target, start_worker, concurrency=2)
        result = probe(cli, env)
        verdict = result.verdict()
        assert result.code == 0, verdict["reasons"]
        assert verdict["active_tasks"] == 1
        busy.revoke(terminate=True)

    def test_every_child_busy_is_degraded(self, target, start_worker, cli):
        env, busy = self.occupy_one_child(target, start_worker, concurrency=1)
        result = probe(cli, env)
        verdict = result.verdict()
        assert result.code == 3, json.dumps(verdict["reasons"], indent=1)
        assert "celery_workers_saturated" in result.codes()
        assert "celery_roundtrip_failed" not in result.codes()
        assert result.elapsed < BOUND
        busy.revoke(terminate=True)


@pytest.mark.rabbitmq_only
class TestRabbitMQFaults:
    """RabbitMQ unreachable or frozen, faked by a loopback proxy: the shared broker keeps running."""

    def via_proxy(self, target, proxy):
        return target.broker_url.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")

    def test_healthy_through_the_proxy_then_frozen(self, target, start_worker, cli):
        env = target.env()
        start_worker(env)
        with TcpProxy(5672) as proxy:
            url = self.via_proxy(target, proxy)
            assert probe(cli, env, "-b", url).code == 0
            proxy.blackhole()
            result = probe(cli, env, "-b", url)
        assert result.code == 2, result.stdout
        first = result.verdict()["reasons"][0]
        assert first["code"] == "celery_broker_unreachable" and "no answer within" in first["message"]
        assert result.elapsed < BOUND

    def test_refused(self, target, cli):
        with TcpProxy(5672) as proxy:
            proxy.refuse()
            result = probe(cli, target.env(), "-b", self.via_proxy(target, proxy))
        assert result.code == 2 and result.verdict()["reasons"][0]["code"] == "celery_broker_unreachable"
        assert result.elapsed < DEADLINE

    def test_redis_result_backend(self, target, start_worker, cli):
        with RedisServer() as backend:
            env = target.env(backend=backend.url(0))
            start_worker(env)
            result = probe(cli, env)
            assert result.code == 0, result.stdout
            assert result.verdict()["roundtrip_ms"] is not None
            with backend.client() as client:
                assert not client.keys("celery-task-meta-*")
