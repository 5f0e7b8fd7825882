"""Where the tests live, the apps they run, and running celery-probe as cron would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from celery_probe.testing import RedisServer
from tests.support.rabbitmq import delete_rabbitmq_names

TESTS = Path(__file__).resolve().parents[1]
APPS = TESTS / "apps"
ROOT = TESTS.parent


RABBITMQ_URL = os.environ.get("CELERY_PROBE_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")


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


def delete_target_names(target: Target) -> None:
    """Delete what a test created on the shared RabbitMQ under its own names."""
    delete_rabbitmq_names(target.broker_url, [target.default_queue, *target.created_queues], target.control_exchange)


def target_for(kind: str) -> Iterator[Target]:
    """A broker of the given kind for one test (or module): a private redis-server, or own names on RabbitMQ."""
    if kind == "redis":
        with RedisServer() as server:
            yield Target("redis", server.url(0), server.url(1), "celery", "celery", redis=server)
        return
    suffix = uuid.uuid4().hex[:10]
    found = Target("rabbitmq", RABBITMQ_URL, "rpc://", f"probe-{suffix}", f"probe-{suffix}", suffix=suffix)
    try:
        yield found
    finally:
        delete_target_names(found)


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
