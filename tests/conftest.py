"""Fixtures for testing celery-probe against real brokers, workers and HTTP servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from celery_probe.testing import CeleryWorker, HealthEndpoint, RedisServer, delete_rabbitmq_names

TESTS = Path(__file__).resolve().parent
APPS = TESTS / "apps"
ROOT = TESTS.parent


RABBITMQ_URL = os.environ.get("CELERY_PROBE_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broker", choices=("redis", "rabbitmq"),
        default=os.environ.get("CELERY_PROBE_TEST_BROKER", "redis"),
        help="broker the broker-agnostic tests run against (redis: private redis-servers; "
             "rabbitmq: the local RabbitMQ, with queue and exchange names of their own)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "redis_only: needs a private redis-server as the broker")
    config.addinivalue_line("markers", "rabbitmq_only: needs RabbitMQ as the broker")


def pytest_runtest_setup(item: pytest.Item) -> None:
    kind = item.config.getoption("--broker")
    if kind != "redis" and item.get_closest_marker("redis_only"):
        pytest.skip("redis only (run with --broker redis)")
    if kind != "rabbitmq" and item.get_closest_marker("rabbitmq_only"):
        pytest.skip("rabbitmq only (run with --broker rabbitmq)")


@dataclass
class Target:
    """A broker (and result backend) for one test, isolated from everything else on it."""

    kind: str
    broker_url: str
    backend_url: str | None
    default_queue: str
    control_exchange: str
    redis: RedisServer | None = None
    suffix: str = ""
    created_queues: list[str] = field(default_factory=list)

    def queue(self, name: str) -> str:
        """A queue name of this test's own (suffixed on a shared RabbitMQ)."""
        unique = f"{name}-{self.suffix}" if self.suffix else name
        self.created_queues.append(unique)
        return unique

    def env(self, backend: str | None | bool = True, **extra: str) -> dict[str, str]:
        chosen = self.backend_url if backend is True else (backend or None)
        return app_env(self.broker_url, chosen or None, PROBE_TEST_DEFAULT_QUEUE=self.default_queue,
                       PROBE_TEST_CONTROL_EXCHANGE=self.control_exchange, **extra)

    def client(self, backend: bool = True) -> Any:
        """A Celery client of the same broker, to send tasks and inspect workers."""
        from celery import Celery

        app = Celery(broker=self.broker_url, backend=self.backend_url if backend else None,
                     set_as_current=False)
        app.conf.control_exchange = self.control_exchange
        app.conf.task_default_queue = self.default_queue
        return app


def _delete_rabbitmq_names(target: Target) -> None:
    delete_rabbitmq_names(target.broker_url, [target.default_queue, *target.created_queues], target.control_exchange)


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The broker of the `--broker` option, private to this test."""
    yield from _target(request.config.getoption("--broker"))


@pytest.fixture(scope="module")
def module_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Like `target`, shared by the tests of one module (they must not break it)."""
    yield from _target(request.config.getoption("--broker"))


def _target(kind: str) -> Iterator[Target]:
    import uuid

    if kind == "redis":
        with RedisServer() as server:
            yield Target("redis", server.url(0), server.url(1), "celery", "celery", redis=server)
        return
    suffix = uuid.uuid4().hex[:10]
    found = Target("rabbitmq", RABBITMQ_URL, "rpc://", f"probe-{suffix}", f"probe-{suffix}", suffix=suffix)
    try:
        yield found
    finally:
        _delete_rabbitmq_names(found)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port, for this test alone."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    """A private redis-server shared by the tests of one module (they must not kill it)."""
    with RedisServer() as server:
        yield server


def app_env(broker: str, backend: str | None = None, **extra: str) -> dict[str, str]:
    """Environment that points the test app (and celery-probe -A) at a broker."""
    env = {"PROBE_TEST_BROKER": broker, "PROBE_TEST_BACKEND": backend or ""}
    env.update(extra)
    return env


def missing_system_program(what: str) -> None:
    """Skip a test whose system program (Chromium, nginx) is missing; fail instead under CI.

    A check that silently never runs is a defect: CI (``CI`` set, as ``.ci/run`` does) has
    run ``scripts/install-test-deps``, so a missing program there is an error.
    """
    message = f"{what}: run scripts/install-test-deps (and pip install -e '.[test]')"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI is set, so this test may not skip")
    pytest.skip(message)


@pytest.fixture
def start_worker() -> Iterator[Callable[..., CeleryWorker]]:
    """Start real `celery worker` processes of tests/apps/probe_test_app; all stopped at teardown."""
    started: list[CeleryWorker] = []

    def start(env: dict[str, str], *, name: str = "w1@%h", queues: tuple[str, ...] | None = None,
              pool: str = "solo", concurrency: int = 1, extra: tuple[str, ...] = ()) -> CeleryWorker:
        queues = queues or (env.get("PROBE_TEST_DEFAULT_QUEUE") or "celery",)
        worker = CeleryWorker(
            "probe_test_app", name=name, queues=queues, pool=pool, concurrency=concurrency,
            env=env, pythonpath=[APPS], extra=extra,
        )
        started.append(worker)
        return worker.start(timeout=40)

    yield start
    for worker in started:
        worker.close()


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    elapsed: float

    def verdict(self) -> dict[str, Any]:
        return json.loads(self.stdout)

    def codes(self) -> set[str]:
        return {r["code"] for r in self.verdict()["reasons"] if r["severity"] != "info"}


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> CliResult:
    """Run `celery-probe` as a real process (as cron would) and time it."""
    full_env = {**os.environ, "PYTHONPATH": str(APPS), **(env or {})}
    full_env.pop("NO_COLOR", None)
    full_env.pop("FORCE_COLOR", None)
    full_env.update({k: v for k, v in (env or {}).items()})
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "celery_probe", *args], env=full_env, cwd=cwd, capture_output=True,
        text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., CliResult]:
    """`celery-probe` in a fresh working directory with its own report folder."""

    def call(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> CliResult:
        return run_cli(*args, env=env, cwd=tmp_path, timeout=timeout)

    return call


# ----------------------------------------------------------------------------- HTTP server


@pytest.fixture
def http_server() -> Iterator[HealthEndpoint]:
    """A real HTTP server on a free loopback port (see HealthEndpoint); `.url(path)` builds addresses."""
    with HealthEndpoint(hang_limit=15.0) as server:
        yield server


def redis_state(redis: RedisServer) -> dict[tuple[int, str], tuple[str, int]]:
    """Every key of the broker (db 0) and the backend (db 1) with its type and size."""
    state = {}
    for db in (0, 1):
        with redis.client(db) as client:
            for key in client.keys("*"):
                kind = client.type(key).decode()
                size = {"set": client.scard, "zset": client.zcard, "list": client.llen,
                        "hash": client.hlen}.get(kind, lambda _key: 1)(key)
                state[(db, key.decode(errors="replace"))] = (kind, size)
    return state


# --------------------------------------------------------------------------- RabbitMQ vhosts


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` against the local RabbitMQ; its stdout (bounded, raises on failure)."""
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60,
                          check=True).stdout


@pytest.fixture
def vhost_url() -> Iterator[str]:
    """``amqp://`` URL of a RabbitMQ vhost of this test's own, deleted with all it holds afterwards.

    Quorum queues, x-max-priority queues and delayed-delivery queues of a test go with it, so
    the shared vhost is never changed.
    """
    name = f"celery-probe-test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)
