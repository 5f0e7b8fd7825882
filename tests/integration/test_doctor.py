"""``celery-probe doctor`` against real brokers and real workers, each set up to have a problem,
and set up not to.

Broker-agnostic cases use the ``target`` of ``--broker`` (a private redis-server, or names of
their own on RabbitMQ); Redis findings are ``redis_only`` (private redis-servers started with the
policy under test); the quorum-queue finding is ``rabbitmq_only``, in a vhost of its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from celery_probe.testing import CeleryWorker, RedisServer, wait_until
from tests.support.environment import (
    APPS,
    ROOT,
    CliResult,
    Target,
    app_env,
    missing_system_program,
    redis_state,
)

DEADLINE = "8"
OLD_CELERY_VENV = ROOT / ".venv-celery-old"  # made by scripts/install-test-deps: celery 5.4


def review(result: CliResult) -> dict[str, Any]:
    assert "Traceback" not in result.stderr, result.stderr
    return json.loads(result.stdout)


def check(document: dict[str, Any], code: str) -> dict[str, Any]:
    return next(c for c in document["checks"] if c["code"] == code)


def finding_codes(document: dict[str, Any]) -> dict[str, str]:
    return {f["code"]: f["severity"] for f in document["findings"]}


class OldCeleryWorker(CeleryWorker):
    """A worker run by another venv's Python (another Celery version), with the test apps on its path."""

    def __init__(self, python: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.python = str(python)

    def command(self) -> list[str]:
        return [self.python, *super().command()[1:]]


@pytest.fixture
def doctor_worker() -> Iterator[Callable[..., CeleryWorker]]:
    """Start real workers of tests/apps/doctor_app.py (or another app); all stopped at teardown."""
    started: list[CeleryWorker] = []

    def start(env: dict[str, str], *, queues: tuple[str, ...], name: str = "doctor1@%h", app: str = "doctor_app",
              extra: tuple[str, ...] = (), python: Path | None = None, pool: str = "solo",
              concurrency: int = 1) -> CeleryWorker:
        kwargs: dict[str, Any] = {"name": name, "queues": queues, "pool": pool, "concurrency": concurrency,
                                  "env": env, "pythonpath": [APPS], "extra": extra}
        worker = OldCeleryWorker(python, app, **kwargs) if python else CeleryWorker(app, **kwargs)
        started.append(worker)
        return worker.start(timeout=40)

    yield start
    for worker in started:
        worker.close()


# ------------------------------------------------------------------------------ any broker


class TestDeployments:
    """One deployment with every setting production needs, one with none of them."""

    def test_a_safe_deployment_has_no_finding(self, target: Target, doctor_worker, cli):
        env = target.env(DOCTOR_SAFE="1", CELERY_PROBE_TASK_SLA="doctor.*=2s", CELERY_PROBE_EVENTS_WINDOW="1")
        doctor_worker(env, queues=(target.default_queue,), extra=("-E",))
        # A deployment in service has run tasks: a -E worker started without heartbeats (as the
        # test workers are) declares the events exchange with its first task event, not before.
        client = Celery("doctor_client", broker=env["PROBE_TEST_BROKER"], backend=env.get("PROBE_TEST_BACKEND") or None)
        try:
            assert client.send_task("doctor.add", args=(1, 2), queue=target.default_queue).get(timeout=30) == 3
        finally:
            client.close()
        result = cli("doctor", "-A", "doctor_app", "--deadline", DEADLINE, "--format", "json", env=env)
        document = review(result)
        assert result.code == 0, json.dumps(document["findings"], indent=1)
        assert document["findings"] == [] and document["incomplete"] is None
        statuses = {c["code"]: c["status"] for c in document["checks"]}
        assert "not checked" not in statuses.values(), json.dumps(document["checks"], indent=1)
        for code in ("no-time-limit", "cancel-on-connection-loss", "connection-retry-on-startup",
                     "no-result-backend", "task-events-off", "version-drift", "queue-drift"):
            assert statuses[code] == "passed", code
        assert "task events from doctor1@" in check(document, "task-events-off")["seen"]
        if target.kind == "redis":
            assert statuses["redis-eviction-policy"] == "passed"
            assert "maxmemory-policy noeviction" in check(document, "redis-eviction-policy")["seen"]
            assert statuses["quorum-queue-eta"] == "not applicable"
        else:
            assert statuses["quorum-queue-eta"] == "passed"
            assert statuses["redis-eviction-policy"] == "not applicable"

    def test_an_unsafe_deployment_has_every_finding(self, target: Target, doctor_worker, cli):
        stray = target.queue("stray")
        env = target.env(backend=False, CELERY_PROBE_TASK_SLA="doctor.*=2s", CELERY_PROBE_EVENTS_WINDOW="1")
        running = doctor_worker(env, queues=(target.default_queue, stray))
        result = cli("doctor", "-A", "doctor_app", "--deadline", DEADLINE, "--format", "json", env=env)
        document = review(result)
        found = finding_codes(document)
        assert found == {"no-time-limit": "warning", "cancel-on-connection-loss": "info",
                         "connection-retry-on-startup": "warning", "no-result-backend": "warning",
                         "task-events-off": "warning", "queue-drift": "warning"}, json.dumps(document["findings"], indent=1)
        assert result.code == 1
        seen = {f["code"]: f["seen"] for f in document["findings"]}
        assert "tasks without a limit: doctor.add" in seen["no-time-limit"]
        assert "doctor.limited" not in seen["no-time-limit"]  # it has time_limit=30 of its own
        assert running.name in seen["no-time-limit"]
        assert f"broker_connection_retry_on_startup unset on the app, {running.name}" == seen["connection-retry-on-startup"]
        assert f"{stray} consumed by {running.name}" in seen["queue-drift"]
        # On a RabbitMQ where no worker ever sent events, their exchange does not even exist.
        assert ("gave no task event" in seen["task-events-off"]
                or "celeryev does not exist" in seen["task-events-off"]), seen["task-events-off"]
        assert f"no result backend on the app, {running.name}" in seen["no-result-backend"]
        for entry in document["findings"]:
            assert entry["why"] and entry["fix"] and entry["docs"].startswith("https://")

    def test_text_output_and_colour(self, target: Target, cli):
        env = target.env(DOCTOR_SAFE="1")
        plain = cli("doctor", "-A", "doctor_app", "--deadline", DEADLINE, env=env)
        # No worker answered: the workers' checks were not made, so the review is incomplete
        # (only a critical finding of the app's or the broker's own would exit 2 instead).
        assert plain.code in (2, 4), plain.stdout + plain.stderr
        assert "INCOMPLETE: no worker answered ping: the workers' checks were not made" in plain.stdout, plain.stdout
        assert plain.stdout.startswith("celery-probe doctor: app doctor_app on ")
        assert "\x1b[" not in plain.stdout
        assert "NOT CHECKED  version-drift: no worker answered ping" in plain.stdout
        forced = cli("doctor", "-A", "doctor_app", "--deadline", DEADLINE, env={**env, "FORCE_COLOR": "1"})
        assert "\x1b[" in forced.stdout
        off = cli("doctor", "-A", "doctor_app", "--deadline", DEADLINE,
                  env={**env, "FORCE_COLOR": "1", "NO_COLOR": "1"})
        assert "\x1b[" not in off.stdout

    def test_version_drift_with_a_worker_of_another_celery(self, target: Target, doctor_worker, cli):
        python = OLD_CELERY_VENV / "bin" / "python"
        if not python.exists():
            missing_system_program(f"the Celery 5.4 venv {OLD_CELERY_VENV}")
        env = target.env(DOCTOR_SAFE="1")
        new = doctor_worker(env, queues=(target.default_queue,), name="new@%h")
        old = doctor_worker(env, queues=(target.default_queue,), name="old@%h", python=python)
        result = cli("doctor", "-A", "doctor_app", "--deadline", DEADLINE, "--format", "json", env=env)
        document = review(result)
        assert sorted(document["workers"]) == sorted([new.name, old.name])
        drift = next(f for f in document["findings"] if f["code"] == "version-drift")
        assert drift["severity"] == "warning" and result.code == 1
        assert "celery 5.4." in drift["seen"] and old.name in drift["seen"]
        assert f"on the app, {new.name}" in drift["seen"]


class TestBadInput:
    """A mistake is one line and exit 64, never a traceback."""

    @pytest.mark.parametrize("args, says", [
        (("-A", "no_such_module_here"), "cannot load Celery app 'no_such_module_here'"),
        (("-b", "nosuchscheme://127.0.0.1:1/0"), "invalid broker"),
        (("-b", "redis://127.0.0.1:1/0", "--deadline", "soon"), "invalid --deadline 'soon'"),
        ((), "no target"),
    ])
    def test_usage_errors(self, cli, args, says):
        result = cli("doctor", *args)
        assert result.code == 64, result.stderr
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], result.stderr

    @pytest.mark.parametrize("app", ["broken_import_app", "missing_config_app"])
    def test_an_app_whose_code_or_settings_fail_is_incomplete(self, cli, app):
        result = cli("doctor", "-A", app, "--format", "json")
        document = review(result)
        assert result.code == 4
        assert f"app {app!r} did not load" in document["incomplete"]
        assert {c["status"] for c in document["checks"]} == {"not checked"}


# ------------------------------------------------------------------------------ Redis


@pytest.mark.redis_only
class TestRedis:
    """Findings only a Redis broker can have, on private redis-servers."""

    def test_eviction_policy(self, cli):
        with RedisServer(extra=["--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"]) as server:
            env = app_env(server.url(0), server.url(1), DOCTOR_SAFE="1")
            result = cli("doctor", "-A", "doctor_app", "--deadline", DEADLINE, "--format", "json", env=env)
        document = review(result)
        [finding] = [f for f in document["findings"] if f["code"] == "redis-eviction-policy"]
        assert finding["severity"] == "critical" and result.code == 2
        assert finding["seen"] == "maxmemory-policy allkeys-lru, maxmemory 104857600"
        assert "noeviction" in finding["fix"] and finding["docs"].startswith("https://redis.io/")

    def test_config_renamed_is_not_checked(self, cli):
        with RedisServer(extra=["--rename-command", "CONFIG", ""]) as server:
            env = app_env(server.url(0), server.url(1), DOCTOR_SAFE="1")
            result = cli("doctor", "-A", "doctor_app", "--deadline", DEADLINE, "--format", "json", env=env)
        eviction = check(review(result), "redis-eviction-policy")
        assert eviction["status"] == "not checked"
        assert "CONFIG disabled or renamed" in eviction["reason"] and "unknown command" in eviction["reason"]

    def test_countdown_longer_than_the_visibility_timeout(self, redis_server, doctor_worker, cli):
        env = app_env(redis_server.url(0), redis_server.url(1), DOCTOR_SAFE="1", DOCTOR_VISIBILITY_TIMEOUT="60")
        args = ("doctor", "-A", "doctor_app", "--deadline", DEADLINE, "--format", "json")
        client = CeleryClient(redis_server.url(0))
        client.send_task("doctor.add", args=(1, 2), countdown=600, queue="celery")
        waiting = review(cli(*args, env=env))  # no worker yet: the message waits in its list
        [finding] = [f for f in waiting["findings"] if f["code"] == "redis-visibility-timeout"]
        assert finding["severity"] == "critical"
        assert "visibility_timeout 60s (set by the app)" in finding["seen"]
        assert "doctor.add in celery (queue) due in 59" in finding["seen"]  # 599.x s, whole seconds
        doctor_worker(env, queues=("celery",))
        with redis_server.client(0) as redis:
            wait_until(lambda: redis.hlen("unacked") == 1, timeout=20, what="the worker holding the ETA task")
        held = review(cli(*args, env=env))
        [finding] = [f for f in held["findings"] if f["code"] == "redis-visibility-timeout"]
        assert "doctor.add in celery (unacked)" in finding["seen"]
        with redis_server.client(0) as redis:
            assert redis.hlen("unacked") == 1  # read, not taken

    def test_countdown_within_the_visibility_timeout(self, redis_server, cli):
        env = app_env(redis_server.url(0), redis_server.url(1), DOCTOR_SAFE="1")
        CeleryClient(redis_server.url(0)).send_task("doctor.add", args=(1, 2), countdown=600, queue="celery")
        document = review(cli("doctor", "-A", "doctor_app", "--deadline", DEADLINE, "--format", "json", env=env))
        visibility = check(document, "redis-visibility-timeout")
        assert visibility["status"] == "passed", visibility
        assert "visibility_timeout 3600s (default); longest ETA waiting 59" in visibility["seen"]

    @pytest.mark.parametrize("visibility, status", [("60", "finding"), (None, "passed")])
    def test_acks_late_time_limit_against_the_visibility_timeout(self, redis_server, cli, visibility, status):
        extra = {"DOCTOR_VISIBILITY_TIMEOUT": visibility} if visibility else {}
        env = app_env(redis_server.url(0), redis_server.url(1), DOCTOR_SAFE="1", DOCTOR_ACKS_LATE="1",
                      DOCTOR_TIME_LIMIT="120", **extra)
        document = review(cli("doctor", "-A", "doctor_app", "--deadline", DEADLINE, "--format", "json", env=env))
        acks = check(document, "redis-visibility-timeout-acks-late")
        assert acks["status"] == status, acks
        if status == "finding":
            assert acks["severity"] == "critical"
            assert acks["seen"] == "task_acks_late on, visibility_timeout 60s, but task_time_limit 120s"

    def test_a_review_leaves_redis_as_it_was(self, redis_server, doctor_worker, cli):
        """Its reads take nothing; the no-op tasks of the events check leave no result, no binding."""
        env = app_env(redis_server.url(0), redis_server.url(1), DOCTOR_SAFE="1", DOCTOR_VISIBILITY_TIMEOUT="300",
                      CELERY_PROBE_TASK_SLA="doctor.*=2s", CELERY_PROBE_EVENTS_WINDOW="1")
        doctor_worker(env, queues=("celery",), extra=("-E",))
        CeleryClient(redis_server.url(0)).send_task("doctor.add", args=(1, 2), countdown=600, queue="celery")
        args = ("doctor", "-A", "doctor_app", "--deadline", DEADLINE, "--format", "json")
        first = cli(*args, env=env)  # creates what every remote-control call shares (kombu's binding sets)
        assert check(review(first), "task-events-off")["status"] == "passed", first.stdout
        before = redis_state(redis_server)
        for _ in range(2):
            assert cli(*args, env=env).code == 2  # the countdown beyond the visibility timeout
        assert redis_state(redis_server) == before

    def test_passwords_are_never_shown(self, doctor_worker, cli):
        with RedisServer(password="s3cret-pw-doctor") as server:
            env = app_env(server.url(0), server.url(1), DOCTOR_SAFE="1")
            doctor_worker(env, queues=("celery",))
            as_json = cli("doctor", "-A", "doctor_app", "--deadline", DEADLINE, "--format", "json", env=env)
            as_text = cli("doctor", "-A", "doctor_app", "--deadline", DEADLINE, env=env)
        assert review(as_json)["broker"] == f"redis://:***@127.0.0.1:{server.port}/0"
        assert as_json.code == 0 and as_text.code == 0, as_text.stdout
        for result in (as_json, as_text):
            assert "s3cret-pw-doctor" not in result.stdout + result.stderr

    def test_a_frozen_broker_does_not_hang_the_review(self, redis_server, cli):
        env = app_env(redis_server.url(0), redis_server.url(1), DOCTOR_SAFE="1")
        redis_server.freeze()
        try:
            started = time.monotonic()
            result = cli("doctor", "-A", "doctor_app", "--deadline", "3", "--format", "json", env=env, timeout=30)
            took = time.monotonic() - started
        finally:
            redis_server.thaw()
        document = review(result)
        assert result.code == 4, result.stdout
        assert took < 3 + 4, took  # the deadline plus interpreter start on a busy host
        assert document["elapsed_s"] <= 3.5
        assert "the broker did not answer" in document["incomplete"]
        assert check(document, "redis-eviction-policy")["status"] == "not checked"
        assert check(document, "no-time-limit")["status"] == "passed"  # the app's own settings still count


def CeleryClient(broker: str) -> Any:
    """A bare Celery client of ``broker``, to send tasks as the app would."""
    from celery import Celery

    return Celery(broker=broker, set_as_current=False)


# ------------------------------------------------------------------------------ RabbitMQ


@pytest.mark.rabbitmq_only
class TestQuorumQueues:
    """Celery's examples/quorum-queues shape, in a vhost of this test's own."""

    def start(self, vhost: str, doctor_worker, exchange_type: str) -> tuple[dict[str, str], CeleryWorker]:
        env = app_env(vhost, "rpc://", PROBE_TEST_EXCHANGE_TYPE=exchange_type)
        return env, doctor_worker(env, queues=("celery",), app="quorum_test_app", pool="threads",
                                  concurrency=2)

    def test_countdown_tasks_on_a_direct_exchange(self, vhost_url, doctor_worker, cli):
        env, running = self.start(vhost_url, doctor_worker, "direct")
        from celery import Celery

        client = Celery(broker=vhost_url, set_as_current=False)
        client.conf.task_default_queue_type = "quorum"
        client.conf.broker_transport_options = {"confirm_publish": True}
        for _ in range(2):
            client.send_task("quorum_test.later", args=("x",), countdown=600)

        def held() -> bool:
            found = client.control.inspect(destination=[running.name], timeout=1).scheduled() or {}
            return len(found.get(running.name) or []) == 2

        wait_until(held, timeout=20, what="two countdown tasks held by the worker")
        result = cli("doctor", "-A", "quorum_test_app", "--deadline", DEADLINE, "--format", "json", env=env)
        document = review(result)
        [finding] = [f for f in document["findings"] if f["code"] == "quorum-queue-eta"]
        assert finding["severity"] == "critical" and result.code == 2
        assert "quorum queue(s) celery on a direct exchange" in finding["seen"]
        assert f"countdown/ETA tasks held now: {running.name} 2" in finding["seen"]

    def test_a_topic_exchange_has_native_delayed_delivery(self, vhost_url, doctor_worker, cli):
        env, _running = self.start(vhost_url, doctor_worker, "topic")
        document = review(cli("doctor", "-A", "quorum_test_app", "--deadline", DEADLINE, "--format", "json", env=env))
        quorum = check(document, "quorum-queue-eta")
        assert quorum["status"] == "passed", quorum
        assert "native delayed delivery available" in quorum["seen"]
