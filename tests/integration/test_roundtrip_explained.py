"""A round trip that does not come back says why: another backend, a full prefetch, a relative file.

Each case runs real workers: a worker that stores results in another backend than the probe
reads ran the task, so the verdict is ``unknown`` (``celery_backend_mismatch``), never a
false ``down``; a quorum-queue worker whose prefetch is held by countdown tasks has truly
stalled (``down``), and the reason names the prefetch.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from celery_probe.testing import CeleryWorker, RedisServer, wait_until
from tests.support.environment import APPS, app_env, run_cli

DEADLINE = "3"
PASSWORD = "pw-Zq81x"


def reasons(result, code: str) -> list[dict]:
    return [r for r in result.verdict()["reasons"] if r["code"] == code]


@pytest.fixture
def password_redis() -> Iterator[RedisServer]:
    with RedisServer(password=PASSWORD) as server:
        yield server


class Worker(CeleryWorker):
    """A worker that counts as started once it reports consuming its queue.

    Right after " ready." a worker has been seen to answer ``active_queues`` with no queue for
    a moment; these tests are about the round trip, so they wait that moment out.
    """

    def start(self, *, broker_url: str | None = None, timeout: float = 30.0) -> Worker:
        super().start(broker_url=broker_url, timeout=timeout)
        client = Celery(broker=self.env["PROBE_TEST_BROKER"], set_as_current=False)
        client.conf.task_default_exchange_type = self.env.get("PROBE_TEST_EXCHANGE_TYPE") or "direct"

        def consuming() -> bool:
            found = client.control.inspect(destination=[self.name], timeout=1).active_queues() or {}
            return bool(found.get(self.name))

        try:
            wait_until(consuming, timeout=timeout, interval=0.1, what=f"{self.name} consuming")
        finally:
            client.close()
        return self


def worker(env: dict[str, str], *, app: str = "probe_test_app", cwd: Path | None = None,
           pool: str = "solo", concurrency: int = 1) -> Worker:
    queue = env.get("PROBE_TEST_DEFAULT_QUEUE") or "celery"
    return Worker(app, name=f"w-{uuid.uuid4().hex[:6]}@%h", queues=(queue,), env=env,
                  pythonpath=[APPS], cwd=cwd, pool=pool, concurrency=concurrency)


@pytest.mark.redis_only
class TestBackendMismatch:
    """``--backend`` given to the probe but not to the workers: unconfirmed, not down."""

    def test_workers_on_another_db_give_unknown_with_their_backend(self, password_redis, tmp_path):
        env = app_env(password_redis.url(0), password_redis.url(1))
        with worker(env).start(timeout=40):
            result = run_cli("run", "-A", "probe_test_app", "--backend", password_redis.url(2),
                             "--deadline", DEADLINE, "--format", "json", env=env, cwd=tmp_path)
        verdict = result.verdict()
        assert verdict["status"] == "unknown", json.dumps(verdict["reasons"], indent=1)
        assert result.code == 4
        assert "celery_roundtrip_failed" not in result.codes()
        [reason] = reasons(result, "celery_backend_mismatch")
        assert reason["severity"] == "error"
        port = password_redis.port
        assert f"stores its results in redis://:***@127.0.0.1:{port}/1" in reason["message"]
        assert f"this probe reads redis://:***@127.0.0.1:{port}/2" in reason["message"]
        assert PASSWORD not in result.stdout + result.stderr

    def test_workers_without_a_backend(self, redis_server, tmp_path):
        env = app_env(redis_server.url(0), None)
        with worker(env).start(timeout=40):
            result = run_cli("run", "-A", "probe_test_app", "--backend", redis_server.url(1),
                             "--deadline", DEADLINE, "--format", "json", env=env, cwd=tmp_path)
        assert result.verdict()["status"] == "unknown", result.stdout
        [reason] = reasons(result, "celery_backend_mismatch")
        assert "runs without a result backend" in reason["message"]

    def test_the_same_backend_stays_healthy(self, redis_server, tmp_path):
        env = app_env(redis_server.url(0), redis_server.url(1))
        with worker(env).start(timeout=40):
            result = run_cli("run", "-A", "probe_test_app", "--backend", redis_server.url(1),
                             "--deadline", DEADLINE, "--format", "json", env=env, cwd=tmp_path)
        assert result.code == 0, result.stdout


@pytest.mark.redis_only
class TestRelativeSqliteBackend:
    """``db+sqlite:///results.sqlite`` is a file of each process's working directory."""

    URL = "db+sqlite:///results.sqlite"

    def test_probe_run_from_another_directory(self, redis_server, tmp_path):
        workers_dir, probe_dir = tmp_path / "workers", tmp_path / "cron-home"
        workers_dir.mkdir()
        probe_dir.mkdir()
        env = app_env(redis_server.url(0), self.URL)
        with worker(env, cwd=workers_dir).start(timeout=40):
            elsewhere = run_cli("run", "-A", "probe_test_app", "--deadline", DEADLINE, "--format", "json",
                                env=env, cwd=probe_dir)
            here = run_cli("run", "-A", "probe_test_app", "--deadline", DEADLINE, "--format", "json",
                           env=env, cwd=workers_dir)
        assert elsewhere.verdict()["status"] == "unknown", json.dumps(elsewhere.verdict()["reasons"], indent=1)
        [reason] = reasons(elsewhere, "celery_backend_mismatch")
        assert self.URL in reason["message"] and str(probe_dir / "results.sqlite") in reason["message"]
        assert not (probe_dir / "results.sqlite").exists()  # the probe left no file behind
        assert here.code == 0, here.stdout


# ----------------------------------------------------------------------------- RabbitMQ


@pytest.fixture
def vhost(vhost_url: str) -> str:
    """A RabbitMQ vhost of this test's own: its quorum and delayed-delivery queues go with it."""
    return vhost_url


def quorum_client(broker: str, backend: str, exchange_type: str) -> Celery:
    """A client configured like tests/apps/quorum_test_app.py."""
    app = Celery(broker=broker, backend=backend, set_as_current=False)
    app.conf.task_default_queue_type = "quorum"
    app.conf.broker_transport_options = {"confirm_publish": True}
    app.conf.task_default_exchange_type = exchange_type
    return app


@pytest.mark.rabbitmq_only
class TestQuorumQueues:
    """Celery's examples/quorum-queues shape on the local RabbitMQ, in a vhost of its own."""

    def start(self, vhost: str, redis_server: RedisServer, exchange_type: str):
        env = app_env(vhost, redis_server.url(1), PROBE_TEST_EXCHANGE_TYPE=exchange_type)
        running = worker(env, app="quorum_test_app", pool="threads", concurrency=2).start(timeout=40)
        return env, running, quorum_client(vhost, redis_server.url(1), exchange_type)

    def test_countdown_tasks_fill_the_prefetch(self, vhost, redis_server, tmp_path):
        env, running, client = self.start(vhost, redis_server, "direct")
        try:
            for _ in range(2):
                client.send_task("quorum_test.later", args=("x",), countdown=600)

            def held() -> bool:
                found = client.control.inspect(destination=[running.name], timeout=1).scheduled() or {}
                return len(found.get(running.name) or []) == 2

            wait_until(held, timeout=20, what="two countdown tasks held by the worker")
            result = run_cli("run", "-A", "quorum_test_app", "--deadline", DEADLINE, "--format", "json",
                             env=env, cwd=tmp_path)
        finally:
            running.close()
        verdict = result.verdict()
        assert verdict["status"] == "down", json.dumps(verdict["reasons"], indent=1)
        [reason] = reasons(result, "celery_roundtrip_failed")
        assert "2 scheduled (countdown/eta)" in reason["message"], reason["message"]
        assert "prefetch of 2" in reason["message"] and "quorum" in reason["message"]

    def test_native_delayed_delivery_is_delayed_backlog(self, vhost, redis_server, tmp_path):
        env, running, client = self.start(vhost, redis_server, "topic")
        try:
            for _ in range(3):
                client.send_task("quorum_test.later", args=("x",), countdown=600)
            result = run_cli("run", "-A", "quorum_test_app", "--deadline", DEADLINE, "--format", "json",
                             env=env, cwd=tmp_path)
        finally:
            running.close()
        verdict = result.verdict()
        assert verdict["status"] == "healthy", json.dumps(verdict["reasons"], indent=1)
        assert verdict["delayed_messages"] == 3
        assert verdict["queues"]["celery"]["length"] == 0
