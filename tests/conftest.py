"""Fixtures for testing celery-probe against real brokers, workers and HTTP servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celery_probe.testing import CeleryWorker, RedisServer
from tests.support.environment import APPS, CliResult, Target, run_cli, target_for
from tests.support.http import HealthEndpoint
from tests.support.rabbitmq import rabbitmqctl

# The SMTP, webhook and health-endpoint receivers of the alerting tests, for every test module.
pytest_plugins = ["tests.support.alert_fixtures"]


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


@pytest.fixture
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The broker of the `--broker` option, private to this test."""
    yield from target_for(request.config.getoption("--broker"))


@pytest.fixture(scope="module")
def module_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Like `target`, shared by the tests of one module (they must not break it)."""
    yield from target_for(request.config.getoption("--broker"))


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
